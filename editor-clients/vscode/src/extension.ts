// phils for VS Code: a thin client. It starts `phils serve` over stdio, passes
// the settings on, shows the server's state in the status bar, and lets
// vscode-languageclient turn textDocument/inlineCompletion into ghost text.
// It also tells the server where the cursor rests (phils/didMoveCursor), so
// the prompt there is computed while the user reads, before they type.
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
} from "vscode-languageclient/node";
import { StatusItem } from "./status";

let client: LanguageClient | undefined;
let log: vscode.LogOutputChannel;
let status: StatusItem;

const CURSOR_NOTIFICATION = "phils/didMoveCursor";
const CURSOR_REST_MS = 100; // a cursor still this long is resting: moves while scrolling or holding a key are not sent
let cursorTimer: NodeJS.Timeout | undefined;

/** Send where the cursor rests in `editor`, once it stops moving; typing is left to didChange. */
function cursorMoved(editor: vscode.TextEditor | undefined, kind?: vscode.TextEditorSelectionChangeKind): void {
  if (cursorTimer) clearTimeout(cursorTimer);
  if (!editor || kind === vscode.TextEditorSelectionChangeKind.Command) return;
  const languages = config().get<string[]>("languages", ["python"]);
  if (!languages.includes("*") && !languages.includes(editor.document.languageId)) return;
  cursorTimer = setTimeout(() => {
    const position = editor.selection.active;
    if (!client?.isRunning() || !config().get<boolean>("enabled", true)) return;
    client
      .sendNotification(CURSOR_NOTIFICATION, {
        textDocument: { uri: editor.document.uri.toString() },
        position: { line: position.line, character: position.character },
      })
      .catch(() => undefined);
  }, CURSOR_REST_MS);
}

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration("phils");
}

/** The phils settings tree: the raw `phils.settings` object plus the named shortcuts. */
export function serverSettings(c: vscode.WorkspaceConfiguration = config()): Record<string, any> {
  const tree: Record<string, any> = JSON.parse(JSON.stringify(c.get("settings") ?? {}));
  const section = (name: string) => (tree[name] = tree[name] ?? {});
  section("completion").enabled = c.get<boolean>("enabled", true);
  if (c.get<string>("model")) section("engine").model = c.get<string>("model");
  if (c.get<string>("device")) section("engine").device = c.get<string>("device");
  if (c.get<number>("maxTokens")) section("engine").max_new_tokens = c.get<number>("maxTokens");
  return tree;
}

function serverOptions(c: vscode.WorkspaceConfiguration): ServerOptions {
  const args = [...c.get<string[]>("serverArgs", ["serve"])];
  if (c.get<string>("profile")) args.push("--profile", c.get<string>("profile")!);
  // No `transport`: vscode-languageclient would append --stdio, and stdio is the default anyway.
  return { command: c.get<string>("serverCommand", "phils"), args };
}

function clientOptions(c: vscode.WorkspaceConfiguration): LanguageClientOptions {
  const languages = c.get<string[]>("languages", ["python"]);
  return {
    // Notebook cells too: the server asks for notebooks by their cells (LSP 3.17), so a cell's
    // prompt has the cells above it.
    documentSelector: (languages.includes("*") ? [undefined] : languages).flatMap((language) => [
      { scheme: "file", language },
      { scheme: "untitled", language },
      { scheme: "vscode-notebook-cell", language },
    ]),
    initializationOptions: serverSettings(c),
    outputChannel: log,
    middleware: {
      // The status bar says "generating" while a request is out; nothing is asked when off.
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!config().get<boolean>("enabled", true)) return undefined;
        status.generating(true);
        try {
          return await next(document, position, context, token);
        } finally {
          status.generating(false);
        }
      },
    },
  };
}

async function start(): Promise<void> {
  const c = config();
  client = new LanguageClient("phils", "phils", serverOptions(c), clientOptions(c));
  client.onNotification("phils/status", (params: { state: string; message: string; percent?: number }) =>
    status.update(params.state, params.message, params.percent),
  );
  status.update("starting", "starting the server");
  try {
    await client.start();
  } catch (err) {
    status.update("error", `cannot start ${c.get("serverCommand")}: ${err}`);
  }
}

async function stop(): Promise<void> {
  const old = client;
  client = undefined;
  if (old) await old.stop().catch(() => undefined);
}

async function restart(): Promise<void> {
  await stop();
  await start();
}

// Settings the server process is started with need a restart; the rest are sent on.
const RESTART_KEYS = ["serverCommand", "serverArgs", "profile", "languages"];

async function onConfigurationChanged(event: vscode.ConfigurationChangeEvent): Promise<void> {
  if (!event.affectsConfiguration("phils")) return;
  status.enabled(config().get<boolean>("enabled", true));
  if (RESTART_KEYS.some((key) => event.affectsConfiguration(`phils.${key}`))) {
    await restart();
  } else if (client?.isRunning()) {
    await client.sendNotification(DidChangeConfigurationNotification.type, { settings: serverSettings() });
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  log = vscode.window.createOutputChannel("phils", { log: true });
  status = new StatusItem(config().get<boolean>("enabled", true));
  context.subscriptions.push(
    log,
    status,
    vscode.commands.registerCommand("phils.toggle", async () => {
      const enabled = !config().get<boolean>("enabled", true);
      await config().update("enabled", enabled, vscode.ConfigurationTarget.Global);
    }),
    vscode.commands.registerCommand("phils.restart", restart),
    vscode.commands.registerCommand("phils.showLog", () => log.show()),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
    // Clicks and arrow keys (kind Mouse or Keyboard), and the editor brought forward; edits move the
    // cursor with kind undefined, and the server already warms at an edit.
    vscode.window.onDidChangeTextEditorSelection((event) => {
      if (event.kind !== undefined) cursorMoved(event.textEditor, event.kind);
    }),
    vscode.window.onDidChangeActiveTextEditor((editor) => cursorMoved(editor)),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await stop();
}
