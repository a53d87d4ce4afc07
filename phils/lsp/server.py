"""The pygls language server: capabilities, thin handlers, status and progress.

Handlers parse, call one domain function, and wrap the result in lsprotocol
types. The text of every document lives in pygls' workspace only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from .. import __version__
from .completion import CompletionService, Suggestion
from ..config import Settings, client_settings, merge
from . import notebooks
from .documents import lf, line_prefix_at, use_lsp_line_breaks
from .project import ProjectIndex, path_of

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "phils/status"
STATS_REQUEST = "phils/stats"
# From phils' own editor clients: where the cursor rests ({textDocument: {uri}, position}, as a position request
# has them). LSP tells a server where the cursor is only when the editor asks for something; with this, the
# suggestion there is computed while the user reads, before the first keystroke.
CURSOR_NOTIFICATION = "phils/didMoveCursor"
NOTEBOOKS = types.NotebookDocumentSyncOptions(notebook_selector=[types.NotebookDocumentFilterWithNotebook(notebook="*")])


class PhilsProtocol(LanguageServerProtocol):
    def structure_message(self, data: Any) -> Any:
        if isinstance(data, dict) and "id" in data and self._is_notification(data.get("method")):
            # pygls would run it as a notification and the sender would wait forever.
            error = types.ResponseError(code=-32600, message=f"{data['method']} is a notification, not a request")
            self._send_response(data["id"], error=error)
            raise JsonRpcException(message=error.message, code=error.code)
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            # pygls drops a request whose params it cannot read without answering it,
            # and the editor would wait for that answer forever: answer with the error.
            msg_id = data.get("id") if isinstance(data, dict) else None
            if "method" in data and isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool):
                error = types.ResponseError(code=exc.code, message=f"{exc.message} for {data['method']}")
                self._send_response(msg_id, error=error)
            raise

    def _is_notification(self, method: Any) -> bool:
        message_type = self.get_message_type(method) if isinstance(method, str) else None
        fields = getattr(message_type, "__attrs_attrs__", None)
        return fields is not None and not any(f.name == "id" for f in fields)


class PhilsServer(LanguageServer):
    def __init__(self, settings: Settings, warnings: list[str] | None = None):
        # Notebooks come as cells with their order (LSP 3.17), so a cell's prompt has the cells above it.
        super().__init__("phils", __version__, protocol_cls=PhilsProtocol, notebook_document_sync=NOTEBOOKS)
        self.base_settings = settings  # defaults + profile + file + command line
        self.client_options: dict[str, Any] = {}  # the editor's layer on top
        self.pending_warnings = list(warnings or [])
        self.service = CompletionService(settings, on_status=self._status_from_any_thread)
        self.service.surroundings = lambda uri, comment: notebooks.surroundings(self.workspace, uri, comment)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._progress_ids = itertools.count(1)
        self._progress_token: str | None = None
        self._last_status: tuple | None = None
        self.load_needed = True
        # The client shows LSP 3.18 inline completions: its completion requests (VS Code asks at every
        # identifier keystroke) get no item, or each would supersede the inline request made at the same time.
        self.shows_inline = False

    # --- settings ----------------------------------------------------------

    def apply_client_options(self, options: Any, source: str) -> bool:
        """Layer the editor's settings over the base; True when the model must reload."""
        self.client_options = _deep_merge(self.client_options, client_settings(options))
        settings, warnings = merge(self.base_settings, self.client_options, source)
        self.pending_warnings.extend(warnings)
        return self.service.update_settings(settings)

    def flush_warnings(self) -> None:
        if self.pending_warnings:
            message = "phils: invalid settings, using defaults for them:\n" + "\n".join(self.pending_warnings)
            log.warning(message)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))
            self.pending_warnings.clear()

    # --- model loading, status and progress --------------------------------

    async def load_model(self) -> None:
        """Start the engine client (the shared engine, a remote one, or the model in this process)."""
        self._progress_token = await self._begin_progress(f"phils: loading {self.service.settings.engine.model}")
        try:
            await self.service.start()
        finally:
            token, self._progress_token = self._progress_token, None
            if token is not None:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=self.service.message))

    async def _begin_progress(self, title: str) -> str | None:
        window = self.client_capabilities.window
        if not (window and window.work_done_progress):
            return None
        token = f"phils-load-{next(self._progress_ids)}"
        try:
            await self.work_done_progress.create_async(token)
        except Exception as exc:  # the client refused: go on without a progress bar
            log.info("no progress bar: %s", exc)
            return None
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, percentage=0, cancellable=False))
        return token

    def _status_from_any_thread(self, state: str, message: str, percent: int | None = None) -> None:
        self._on_loop(self._send_status, state, message, percent)

    def _send_status(self, state: str, message: str, percent: int | None = None) -> None:
        params: dict[str, Any] = {"state": state, "message": message}
        if percent is not None:
            params["percent"] = percent
        if state == "loading" and percent is not None and (token := self._progress_token) is not None:
            # Editors show $/progress themselves; status bars read phils/status.
            self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message, percentage=percent))
        if (state, message, percent) == self._last_status:
            return
        self._last_status = (state, message, percent)
        self.protocol.notify(STATUS_NOTIFICATION, params)
        if state == "error":
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"phils: {message}"))

    def _on_loop(self, fn: Any, *args: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    # --- stdio: read in the event loop ----------------------------------------

    def serve_stdio(self) -> None:
        """Serve over stdin/stdout, reading the pipe in the event loop itself.

        pygls' stdio reader hands every header line and every body to a thread
        pool and back: three thread hops per message, each waiting for the GIL
        while the model worker runs, which capped a flood of edits well below
        what the loop can handle. Falls back to pygls for a stdin that is not a
        pipe (a file, a terminal).
        """
        import sys
        from threading import Event

        from pygls.io_ import StdoutWriter, run_async

        self._stop_event = Event()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
            self.protocol.set_writer(StdoutWriter(sys.stdout.buffer))
            try:
                await run_async(stop_event=self._stop_event, reader=reader, protocol=self.protocol, logger=log,
                                error_handler=self.report_server_error)
            except asyncio.IncompleteReadError:
                pass  # the client closed stdin in the middle of a message

        try:
            asyncio.run(main())
        except ValueError:  # not a pipe, socket or character device
            log.info("stdin is not a pipe: using pygls' threaded reader")
            self.start_io()
            return
        except BrokenPipeError:
            log.error("the client went away; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    # --- TCP: the server outlives its clients ------------------------------

    def serve_tcp(self, host: str, port: int) -> None:
        """Listen on host:port for one client at a time.

        pygls' start_tcp shuts the server down when its client disconnects; a
        phils server keeps its model loaded for the next client instead (an
        editor restart, or a crash, must not cost a model load).
        """
        from threading import Event

        from pygls.io_ import run_async

        self._stop_event = stop_event = Event()
        connected = False
        listener: asyncio.base_events.Server | None = None

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connected
            if connected:
                log.warning("refusing a second client while one is connected")
                writer.close()
                return
            connected = True
            log.info("client connected")
            self.protocol.set_writer(writer)
            try:
                await run_async(stop_event=stop_event, reader=reader, protocol=self.protocol, logger=log,
                                error_handler=self.report_server_error)
            finally:
                connected = False
                writer.close()
                if self.protocol._shutdown and listener is not None:  # the client asked the server to end
                    listener.close()
                else:
                    log.info("client disconnected; waiting for the next one")
                    self.client_gone()

        async def listen() -> None:
            nonlocal listener
            listener = await asyncio.start_server(connection, host, port)
            async with listener:
                try:
                    await listener.serve_forever()
                except asyncio.CancelledError:
                    pass

        asyncio.run(listen())

    def client_gone(self) -> None:
        """Drop the departed client's work and documents; keep the model."""
        self.service.client_gone()
        self.client_options = {}
        self._last_status = None

    def open_text(self, path: Path) -> str | None:
        """The editor's text of the document at ``path`` if it is open (any thread may ask)."""
        for uri, doc in list(self.workspace.text_documents.items()):
            if path_of(uri) == path:
                return lf(doc.source)
        return None

    def open_document(self, uri: str):
        """An open document, or None: phils never completes files the editor has not opened."""
        return self.workspace.text_documents.get(unquote(uri))


def create_server(settings: Settings, warnings: list[str] | None = None) -> PhilsServer:
    server = PhilsServer(settings, warnings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: PhilsServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        text_document = params.capabilities.text_document
        ls.shows_inline = bool(text_document and text_document.inline_completion is not None)
        use_lsp_line_breaks(ls.workspace)
        ls.service.project = ProjectIndex(workspace_roots(ls.workspace), ls.open_text)
        changed = ls.apply_client_options(params.initialization_options or {}, "initializationOptions")
        ls.load_needed = changed or ls.service.state in ("idle", "error")

    @server.feature(types.INITIALIZED)
    async def initialized(ls: PhilsServer, params: types.InitializedParams) -> None:
        ls.flush_warnings()
        if ls.load_needed:
            await ls.load_model()
        else:  # a later TCP client: the engine is started (or starting) already
            ls._send_status(ls.service.state, ls.service.message)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: PhilsServer, params: types.DidChangeConfigurationParams) -> None:
        reload = ls.apply_client_options(params.settings, "settings")
        ls.flush_warnings()
        if reload:
            await ls.load_model()

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PhilsServer, params: types.DidChangeTextDocumentParams) -> None:
        doc = ls.open_document(params.text_document.uri)
        if doc is not None and (cursor := _cursor_after(doc, params.content_changes)) is not None:
            ls.service.schedule_warmup(doc, *cursor)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: PhilsServer, params: types.DidOpenTextDocumentParams) -> None:
        if (doc := ls.open_document(params.text_document.uri)) is not None:
            ls.service.schedule_open_warmup(doc)

    @server.feature(CURSOR_NOTIFICATION)
    def did_move_cursor(ls: PhilsServer, params: Any) -> None:
        if (where := _text_position(params)) is not None and (doc := ls.open_document(where[0])) is not None:
            ls.service.cursor_rests(doc, where[1], where[2])

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CHANGE)
    def did_change_notebook(ls: PhilsServer, params: types.DidChangeNotebookDocumentParams) -> None:
        edited = params.change.cells.text_content if params.change.cells else None
        if edited and (doc := ls.open_document(edited[-1].document.uri)) is not None:
            if (cursor := _cursor_after(doc, edited[-1].changes)) is not None:
                ls.service.schedule_warmup(doc, *cursor)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CLOSE)
    def did_close_notebook(ls: PhilsServer, params: types.DidCloseNotebookDocumentParams) -> None:
        ls.service.forget(params.notebook_document.uri)  # its cells' requests are kept under the notebook's URI
        for cell in params.cell_text_documents:
            ls.service.forget(cell.uri)  # (and what waits for a typing pause, under the cell's)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: PhilsServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.service.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: PhilsServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        context = params.context
        invoked = context is not None and context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        # With the completion list open, the editor shows only what extends its selected item, over its range.
        selected = context.selected_completion_info if context is not None else None
        item = _selected_item(selected, params.position) if selected is not None else None
        if selected is not None and item is None:
            return types.InlineCompletionList(items=[])  # an item on another line: nothing here extends it
        suggestion = await _suggest(ls, params.text_document.uri, params.position, item, invoked)
        if suggestion is None:
            return types.InlineCompletionList(items=[])
        before, where = (selected.text, selected.range) if selected is not None else ("", _at_cursor(suggestion))
        return types.InlineCompletionList(items=_inline_items(suggestion, before, where))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: PhilsServer, params: types.CompletionParams) -> types.CompletionList:
        if ls.shows_inline:  # the suggestion is the ghost text's
            return types.CompletionList(is_incomplete=False, items=[])
        suggestion = await _suggest(ls, params.text_document.uri, params.position)
        items = [_completion_item(suggestion, *_word_before(ls, params.text_document.uri, suggestion))] \
            if suggestion else []
        return types.CompletionList(is_incomplete=True, items=items)

    @server.feature(STATS_REQUEST)
    async def stats(ls: PhilsServer, params: Any) -> dict[str, Any]:
        return await ls.service.stats_report()

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: PhilsServer, *args: Any) -> None:
        await ls.service.close()

    return server


async def _suggest(ls: PhilsServer, uri: str, position: types.Position,
                   item: tuple[int, int, str] | None = None, invoked: bool = False) -> Suggestion | None:
    doc = ls.open_document(uri)
    if doc is None:
        return None
    return await ls.service.complete(doc, position.line, position.character, item, invoked)


def _selected_item(selected: types.SelectedCompletionInfo, position: types.Position) -> tuple[int, int, str] | None:
    """(start, end, text) of the completion widget's selected item, where its range is on the cursor's line."""
    where = selected.range
    if where.start.line != position.line or where.end.line != position.line:
        return None
    return where.start.character, where.end.character, selected.text


def workspace_roots(workspace: Any) -> list[Path]:
    """The workspace's folders (and root) as paths, for finding the project's modules."""
    uris = [folder.uri for folder in (getattr(workspace, "folders", None) or {}).values()]
    uris.append(getattr(workspace, "root_uri", None) or "")
    return list(dict.fromkeys(path for uri in uris if uri and (path := path_of(uri)) is not None))


def _text_position(params: Any) -> tuple[str, int, int] | None:
    """(uri, line, character) of a {textDocument: {uri}, position: {line, character}} notification, or None."""
    def field(value: Any, name: str) -> Any:
        return value.get(name) if isinstance(value, dict) else getattr(value, name, None)

    uri = field(field(params, "textDocument"), "uri")
    position = field(params, "position")
    line, character = field(position, "line"), field(position, "character")
    if not isinstance(uri, str) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                           for v in (line, character)):
        log.debug("%s with unreadable params ignored", CURSOR_NOTIFICATION)
        return None
    return uri, line, character


def _cursor_after(doc: Any, changes: Any) -> tuple[int, int] | None:
    """Where the cursor most likely is after an edit: the end of the last inserted text."""
    if not changes or not isinstance(changes[-1], types.TextDocumentContentChangePartial):
        return None
    change = changes[-1]
    inserted = change.text.split("\n")
    start = change.range.start
    if len(inserted) == 1:
        return start.line, start.character + doc.position_codec.client_num_units(change.text)
    return start.line + len(inserted) - 1, doc.position_codec.client_num_units(inserted[-1])


def _inline_items(s: Suggestion, before: str, where: types.Range) -> list[types.InlineCompletionItem]:
    """The suggestion and its alternatives (the editor cycles through them), each after ``before`` over ``where``."""
    return [types.InlineCompletionItem(insert_text=before + s.in_document(text), range=where)
            for text in (s.text, *s.alternatives)]


WORD_BEFORE = re.compile(r"\w*$")


def _word_before(ls: PhilsServer, uri: str, s: Suggestion) -> tuple[str, int]:
    """The part of a name typed before the suggestion's place, and its length in the client's columns."""
    doc = ls.open_document(uri)
    word = WORD_BEFORE.search(line_prefix_at(doc, s.line, s.character)).group() if doc is not None else ""
    return word, doc.position_codec.client_num_units(word) if word else 0


def _completion_item(s: Suggestion, word: str = "", word_units: int = 0) -> types.CompletionItem:
    """The suggestion as a completion item over ``word``, the part of a name typed before the cursor
    (``word_units`` long in the client's columns): editors match an item's label against the word they see
    typed (Helix, Sublime Text, Emacs), and `th.join(a, b)` after `os.pa` would match nothing there;
    `path.join(a, b)` over `pa` does."""
    first_line = word + (s.text.strip() if not word else s.text).split("\n", 1)[0]
    start = types.Position(line=s.line, character=s.character - word_units)
    return types.CompletionItem(
        label=first_line[:80] or s.text.strip()[:80],
        filter_text=first_line,
        kind=types.CompletionItemKind.Text,
        detail="phils",
        documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value=s.text),
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(start=start, end=types.Position(line=s.line, character=s.character)),
                                 new_text=word + s.in_document(s.text)),
        sort_text="0",
    )


def _at_cursor(s: Suggestion) -> types.Range:
    here = types.Position(line=s.line, character=s.character)
    return types.Range(start=here, end=here)


def _deep_merge(base: dict[str, Any], extra: Any) -> dict[str, Any]:
    merged = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
