//! Group administration: creating groups, adding and removing members, leaving, setting roles.
//!
//! Adding a member needs no consent from the member (the policy of the SDK's groups, where an
//! owner or admin adds members directly); what bounds it is `max_groups_per_user` (4
//! EXCEED_SERVICE_LIMIT once a user is in that many groups) and the member's right to leave.

use std::collections::BTreeSet;

use receipt_core::protocol::{Response, ServerEvent};
use receipt_core::rules;
use receipt_core::types::validate_id;
use receipt_core::{ChatError, ErrorCode, GroupRole, UserId};

use crate::state::Group;

use super::{err, Res, ServerCore, StoreOp};

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 256;

impl ServerCore {
    fn check_members(&self, members: &[UserId]) -> Res<()> {
        for m in members {
            validate_id("member", m)?;
        }
        Ok(())
    }

    pub(super) fn create_group(&mut self, user: &str, name: String, members: Vec<UserId>, chat_room: bool) -> Res<Response> {
        if name.len() > MAX_GROUP_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(ChatError::invalid_param(format!(
                "group name must be at most {MAX_GROUP_NAME_BYTES} bytes without control characters"
            )));
        }
        self.check_members(&members)?;
        let mut set: BTreeSet<UserId> = members.into_iter().collect();
        set.remove(user);
        rules::check_group_size(set.len() + 1, self.cfg.max_group_size)?;
        self.limits.check_may_join(self.cfg.max_groups_per_user, std::iter::once(user).chain(set.iter().map(String::as_str)))?;
        let id = loop {
            self.state.counters.last_group_id += 1;
            let id = format!("g{}", self.state.counters.last_group_id);
            if !self.state.groups.contains_key(&id) {
                break id;
            }
        };
        self.counters_dirty = true;
        let mut g = Group { id: id.clone(), name, chat_room, members: Default::default(), joined_after: Default::default() };
        g.members.insert(user.to_string(), GroupRole::Owner);
        for m in &set {
            g.members.insert(m.clone(), GroupRole::Member);
        }
        self.effects.ops.push(StoreOp::PutGroup(g.clone()));
        self.state.groups.insert(id.clone(), g);
        for m in std::iter::once(user).chain(set.iter().map(String::as_str)) {
            self.limits.joined(m);
        }
        self.emit(user, ServerEvent::Membership { group: id.clone(), role: Some(GroupRole::Owner), chat_room });
        for m in &set {
            self.emit(m, ServerEvent::Membership { group: id.clone(), role: Some(GroupRole::Member), chat_room });
        }
        Ok(Response::GroupCreated { group: id })
    }

    /// The group, after checking that `user` is its owner or an admin.
    fn managed_group(&self, user: &str, group: &str) -> Res<(&Group, GroupRole)> {
        let g = self.group(group)?;
        let role = self.role_in(g, user)?;
        if role == GroupRole::Member {
            return Err(err(ErrorCode::GroupPermissionDenied, "only the owner and admins manage members"));
        }
        Ok((g, role))
    }

    pub(super) fn add_members(&mut self, user: &str, group: String, members: Vec<UserId>) -> Res<Response> {
        self.check_members(&members)?;
        let (g, _) = self.managed_group(user, &group)?;
        let new: BTreeSet<UserId> = members.into_iter().filter(|m| !g.members.contains_key(m)).collect();
        rules::check_group_size(g.members.len() + new.len(), self.cfg.max_group_size)?;
        self.limits.check_may_join(self.cfg.max_groups_per_user, new.iter().map(String::as_str))?;
        if new.is_empty() {
            return Ok(Response::Done);
        }
        let g = self.state.groups.get_mut(&group).expect("checked");
        let newest = self.state.counters.last_msg_id;
        for m in &new {
            g.members.insert(m.clone(), GroupRole::Member);
            // Messages sent before they joined are not theirs to ack.
            g.joined_after.insert(m.clone(), newest);
        }
        let chat_room = g.chat_room;
        self.effects.ops.push(StoreOp::PutGroup(g.clone()));
        for m in &new {
            self.limits.joined(m);
            self.emit(m, ServerEvent::Membership { group: group.clone(), role: Some(GroupRole::Member), chat_room });
        }
        Ok(Response::Done)
    }

    pub(super) fn remove_members(&mut self, user: &str, group: String, members: Vec<UserId>) -> Res<Response> {
        self.check_members(&members)?;
        let (g, role) = self.managed_group(user, &group)?;
        let mut gone = BTreeSet::new();
        for m in members {
            match g.members.get(&m) {
                None => {}
                Some(GroupRole::Owner) => {
                    return Err(err(ErrorCode::GroupPermissionDenied, "the owner cannot be removed"));
                }
                Some(GroupRole::Admin) if role != GroupRole::Owner && m != user => {
                    return Err(err(ErrorCode::GroupPermissionDenied, "only the owner removes admins"));
                }
                Some(_) => {
                    gone.insert(m);
                }
            }
        }
        if gone.is_empty() {
            return Ok(Response::Done);
        }
        let g = self.state.groups.get_mut(&group).expect("checked");
        for m in &gone {
            g.members.remove(m);
            g.joined_after.remove(m);
        }
        let chat_room = g.chat_room;
        self.effects.ops.push(StoreOp::PutGroup(g.clone()));
        for m in &gone {
            self.limits.left(m);
            self.emit(m, ServerEvent::Membership { group: group.clone(), role: None, chat_room });
        }
        Ok(Response::Done)
    }

    /// `user` leaves `group`: any member but the owner (who cannot give the group up: 603).
    pub(super) fn leave_group(&mut self, user: &str, group: String) -> Res<Response> {
        validate_id("group", &group)?;
        let g = self.group(&group)?;
        if self.role_in(g, user)? == GroupRole::Owner {
            return Err(err(ErrorCode::GroupPermissionDenied, "the owner cannot leave its group"));
        }
        let g = self.state.groups.get_mut(&group).expect("checked");
        g.members.remove(user);
        let chat_room = g.chat_room;
        self.effects.ops.push(StoreOp::PutGroup(g.clone()));
        self.limits.left(user);
        self.emit(user, ServerEvent::Membership { group, role: None, chat_room });
        Ok(Response::Done)
    }

    pub(super) fn set_role(&mut self, user: &str, group: String, member: UserId, role: GroupRole) -> Res<Response> {
        validate_id("member", &member)?;
        let g = self.group(&group)?;
        if self.role_in(g, user)? != GroupRole::Owner {
            return Err(err(ErrorCode::GroupPermissionDenied, "only the owner sets roles"));
        }
        let current = self.role_in(g, &member)?;
        if role == GroupRole::Owner || current == GroupRole::Owner {
            return Err(ChatError::invalid_param("ownership cannot be transferred or given up"));
        }
        if current == role {
            return Ok(Response::Done);
        }
        let g = self.state.groups.get_mut(&group).expect("checked");
        g.members.insert(member.clone(), role);
        let chat_room = g.chat_room;
        self.effects.ops.push(StoreOp::PutGroup(g.clone()));
        self.emit(&member, ServerEvent::Membership { group, role: Some(role), chat_room });
        Ok(Response::Done)
    }
}
