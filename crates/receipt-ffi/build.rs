//! Gives the cdylib a SONAME, so a binary (or the OpenHarmony NDK link of the NAPI shim) that
//! links against it records `libreceipt_ffi.so` and not the path it was found at.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // ELF targets; the ohos targets have target_os = "linux".
    if matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libreceipt_ffi.so");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
