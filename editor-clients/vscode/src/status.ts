// The status bar item: the server's state from phils/status, "generating"
// while a completion request is out, and a crossed-out icon when off.
import * as vscode from "vscode";

const ICONS: Record<string, string> = {
  starting: "$(loading~spin)",
  loading: "$(loading~spin)",
  ready: "$(sparkle)",
  error: "$(error)",
  idle: "$(circle-outline)",
};

export class StatusItem implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  private state = "starting";
  private message = "";
  private percent: number | undefined;
  private inFlight = 0;

  constructor(private on: boolean) {
    this.item.command = "phils.toggle";
    this.item.name = "phils";
    this.render();
    this.item.show();
  }

  update(state: string, message: string, percent?: number): void {
    this.state = state;
    this.message = message;
    this.percent = percent;
    this.render();
  }

  generating(started: boolean): void {
    this.inFlight = Math.max(0, this.inFlight + (started ? 1 : -1));
    this.render();
  }

  enabled(on: boolean): void {
    this.on = on;
    this.render();
  }

  private render(): void {
    let label = this.state;
    let icon = ICONS[this.state] ?? "$(question)";
    if (this.state === "loading" && this.percent !== undefined) label = `loading ${this.percent}%`;
    if (this.state === "ready" && this.inFlight > 0) {
      label = "generating";
      icon = "$(sync~spin)";
    }
    if (!this.on) {
      label = "off";
      icon = "$(circle-slash)";
    }
    this.item.text = `${icon} phils: ${label}`;
    this.item.tooltip = `${this.message || this.state}\nClick to turn completions ${this.on ? "off" : "on"}.`;
    this.item.backgroundColor =
      this.state === "error" ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
