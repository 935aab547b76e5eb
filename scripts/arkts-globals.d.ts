// Globals that the ArkTS runtime provides to every module (the SDK declares them on a HarmonyOS
// build); declared here so the desktop ArkTS lint sees the same environment.
declare interface Console {
  log(...data: string[]): void;
  info(...data: string[]): void;
  warn(...data: string[]): void;
  error(...data: string[]): void;
}
declare const console: Console;

// The slice of the SDK's '@kit.AbilityKit' that the HAR uses: ChatClient.init takes the app's
// `common.Context` (on a device: the UIAbilityContext, a subclass). Only the type is used, so the
// desktop build emits no import for it.
declare module '@kit.AbilityKit' {
  namespace common {
    class Context {
      filesDir: string;
      cacheDir: string;
      tempDir: string;
    }
    class UIAbilityContext extends Context {}
  }
  export { common };
}
