// Drives code-server in headless Chromium the way a user would: open a
// Python file, type, wait for phils' ghost text, take a screenshot, accept it
// with Tab and save. Prints one JSON line with what it saw.
// Usage: node drive_vscode.mjs URL FILE_NAME SCREENSHOT_PATH PROFILE_DIR
// PHILS_DRIVE_TYPE: what to type at the file's end (" a"); PHILS_DRIVE_ANCHOR: text the open file shows ("return").
// PHILS_DRIVE_NOTEBOOK=1: the file is a notebook; type at the end of its last cell, and do not accept.
// PHILS_DRIVE_CYCLE=1: after the ghost text, Alt+] (the next suggestion); record it, and do not accept.
import { createRequire } from "node:module";

// playwright-core lives with the editor tools (NODE_PATH), not beside this file.
const require = createRequire(`${process.env.NODE_PATH}/`);
const { chromium } = require("playwright-core");

const [url, fileName, screenshot, profileDir] = process.argv.slice(2);
const seen = { status: null, ghost: null, steps: [] };
const step = (name) => seen.steps.push(name);
const typed = process.env.PHILS_DRIVE_TYPE ?? " a";
const anchor = process.env.PHILS_DRIVE_ANCHOR ?? "return";
const notebook = process.env.PHILS_DRIVE_NOTEBOOK === "1";
const cycle = process.env.PHILS_DRIVE_CYCLE === "1";

const context = await chromium.launchPersistentContext(profileDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 720 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(120_000);
try {
  await page.goto(url);
  await page.locator(".monaco-workbench").waitFor();
  step("workbench");
  // A notebook opened before the extensions are up opens as JSON text: wait for them first.
  if (notebook) await page.locator(".statusbar-item", { hasText: "phils: ready" }).waitFor();
  await page.locator(".explorer-folders-view .monaco-list-row", { hasText: fileName }).dblclick();
  const editor = notebook
    ? page.locator(".notebook-editor .cell-editor-container .monaco-editor").last()
    : page.locator(".editor-instance .monaco-editor").first();
  await editor.locator(".view-lines", { hasText: anchor }).waitFor();
  step("file open");
  const ready = page.locator(".statusbar-item", { hasText: "phils: ready" });
  await ready.waitFor();
  seen.status = (await ready.innerText()).trim();
  step("server ready");
  await editor.locator(".view-lines").click();
  await page.keyboard.press("Control+End");
  await page.keyboard.type(typed, { delay: 50 });
  const ghost = editor.locator(".ghost-text-decoration").first();
  await ghost.waitFor();
  await page.waitForTimeout(300); // let the decoration settle before the picture
  // (VS Code draws one line of ghost text in several pieces: around brackets, and the completion list's
  // selected item before the rest)
  const pieces = editor.locator(".ghost-text-decoration, .ghost-text-decoration-preview");
  seen.ghost = (await pieces.allTextContents()).join("").replace(/\u00a0/g, " ");
  seen.widget = await page.locator(".suggest-widget.visible").isVisible().catch(() => false);
  if (seen.widget) {
    seen.selected = (await page.locator(".suggest-widget .monaco-list-row.focused .label-name").first().textContent()).trim();
  }
  await page.screenshot({ path: screenshot });
  step("ghost text");
  if (cycle) {
    const ghostText = async () => (await pieces.allTextContents()).join("").replace(/\u00a0/g, " ");
    await page.keyboard.press("Alt+BracketRight");
    for (let i = 0; i < 300 && (await ghostText()) === seen.ghost; i++) await page.waitForTimeout(100);
    seen.next = await ghostText();
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-next.png") });
    step("next suggestion");
  } else if (!notebook && !seen.widget) { // (with the completion list open, Tab takes its item)
    await page.keyboard.press("Tab");
    await editor.locator(".ghost-text-decoration").first().waitFor({ state: "detached" }).catch(() => {});
    await page.keyboard.press("Control+S");
    await page.locator(".tab.active.dirty").waitFor({ state: "detached", timeout: 10_000 }).catch(() => {});
    await page.waitForTimeout(500);
    step("accepted and saved");
  }
} catch (err) {
  seen.error = String(err);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-failure.png") }).catch(() => {});
} finally {
  console.log(JSON.stringify(seen));
  await context.close();
}
