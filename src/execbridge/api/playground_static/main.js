// The playground: a conversation with the Messages API, streamed into the page as it arrives.
// State is the conversation as the API sees it (messages, the container's id), kept in memory only;
// the key is the one thing kept across reloads of the tab (api.js, sessionStorage).

import * as api from "./api.js";
import { callBlock, el, errorNote, resultBlock, textBlock, thinkingBlock } from "./blocks.js";
import { downloadButton, outputFile } from "./files.js";
import { parsePartial } from "./partial_json.js";

const MAX_AUTO_CONTINUES = 10; // pause_turn continuations in a row before the page asks the person

const $ = (id) => document.getElementById(id);

const state = {
  messages: [], // the conversation so far, in the API's shape
  container: null, // the id to send with the next request, or null for a new container
  attachments: [], // {file, uploaded: file object | null, error} for the next user message
  busy: false,
  controller: null,
  autoContinues: 0,
  follow: true, // keep the newest output in view
};

function describe(error) {
  return error instanceof api.ApiError ? error.describe() : error.message;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("api-key").focus();
  if (message) setStatus(message, true);
}

function handleAuthFailure(error) {
  if (error instanceof api.ApiError && (error.status === 401 || error.type === "authentication_error")) {
    askForKey(describe(error));
    return true;
  }
  return false;
}

async function loadModels() {
  try {
    const models = await api.listModels();
    const list = $("models");
    list.replaceChildren(...models.map((model) => {
      const option = document.createElement("option");
      option.value = model.id;
      return option;
    }));
    if (!$("model").value && models.length) $("model").value = models[0].id;
    setStatus(models.length ? "" : "The upstream lists no models: type a model name.");
  } catch (error) {
    if (!handleAuthFailure(error)) setStatus(`Could not list models: ${describe(error)} — type a model name.`, true);
  }
}

// ---- the container and its files

function showContainer(container) {
  if (!container || !container.id) return;
  // Another container than the one shown (the old one expired, say): its file list no longer applies.
  if (state.container && state.container !== container.id) $("container-files").replaceChildren();
  state.container = container.id;
  $("container-id").textContent = container.id;
}

function listContainerFile(meta, origin) {
  const list = $("container-files");
  if (list.querySelector(`[data-file-id="${CSS.escape(meta.id)}"]`)) return;
  const item = el("li", `from-${origin}`);
  item.dataset.fileId = meta.id;
  item.append(el("span", "name", meta.filename), el("span", "origin", origin === "upload" ? " uploaded" : " made by code"));
  if (meta.downloadable) item.append(downloadButton(meta.id, meta.filename));
  list.append(item);
}

// ---- rendering one assistant message as it streams

function messageView(role) {
  const article = el("article", `message ${role}`);
  article.append(el("div", "role", role === "user" ? "You" : "Assistant"));
  const body = el("div", "body");
  article.append(body);
  $("conversation").append(article);
  return { article, body };
}

// Follows a growing answer, unless the person has scrolled up to read something earlier.
function scrollToEnd() {
  const conversation = $("conversation");
  if (state.follow) conversation.scrollTop = conversation.scrollHeight;
}

function noteScroll() {
  const c = $("conversation");
  state.follow = c.scrollHeight - c.scrollTop - c.clientHeight < 48;
}

function fillOutputFile(fileId, slot) {
  outputFile(fileId).then(({ element, meta }) => {
    slot.replaceWith(element);
    listContainerFile(meta, "output");
  });
}

function blockView(block) {
  switch (block.type) {
    case "text": {
      const view = textBlock();
      if (block.text) view.append(block.text);
      return view;
    }
    case "thinking": {
      const view = thinkingBlock();
      if (block.thinking) view.append(block.thinking);
      return view;
    }
    case "redacted_thinking":
      return { element: el("div", "block note", "(redacted thinking)") };
    case "server_tool_use":
    case "tool_use":
      return callBlock(block);
    default:
      if (block.type.endsWith("_tool_result")) return { element: resultBlock(block, fillOutputFile) };
      return { element: el("pre", "block code", JSON.stringify(block, null, 2)) };
  }
}

// Streams one request; on success adds the answer to the conversation and acts on its stop reason.
async function converse(messages) {
  let body;
  try {
    body = requestBody(messages);
  } catch (error) {
    setStatus(error.message, true);
    return;
  }
  const view = messageView("assistant");
  view.article.dataset.state = "streaming";
  const blocks = [];
  const views = [];
  const partial = [];
  let stopReason = null;
  let stopped = false;
  setBusy(true);
  try {
    for await (const event of api.streamMessage(body, state.controller.signal)) {
      if (event.type === "message_start") {
        showContainer(event.message.container);
      } else if (event.type === "content_block_start") {
        const block = structuredClone(event.content_block);
        blocks[event.index] = block;
        views[event.index] = blockView(block);
        partial[event.index] = "";
        view.body.append(views[event.index].element);
      } else if (event.type === "content_block_delta") {
        applyDelta(blocks[event.index], views[event.index], event.delta, partial, event.index);
      } else if (event.type === "content_block_stop") {
        const block = blocks[event.index];
        if (views[event.index].finish) views[event.index].finish();
        if ((block.type === "tool_use" || block.type === "server_tool_use") && partial[event.index]) {
          block.input = JSON.parse(partial[event.index]);
          views[event.index].show(block.input);
        }
      } else if (event.type === "message_delta") {
        stopReason = event.delta.stop_reason;
        showContainer(event.delta.container);
      } else if (event.type === "message_stop") {
        stopped = true;
      }
      scrollToEnd();
    }
    if (!stopped) throw new Error("The stream ended before the message did (no message_stop).");
  } catch (error) {
    view.article.dataset.state = "failed";
    if (error.name === "AbortError") view.body.append(errorNote("Stopped."));
    else {
      view.body.append(errorNote(describe(error)));
      handleAuthFailure(error);
    }
    return;
  } finally {
    setBusy(false);
  }
  view.article.dataset.state = "done";
  view.article.dataset.stopReason = stopReason || "";
  commit(messages, { role: "assistant", content: blocks.filter(Boolean) });
  afterStop(stopReason, blocks, view);
}

function applyDelta(block, view, delta, partial, index) {
  if (delta.type === "text_delta") {
    block.text += delta.text;
    view.append(delta.text);
  } else if (delta.type === "thinking_delta") {
    block.thinking += delta.thinking;
    view.append(delta.thinking);
  } else if (delta.type === "signature_delta") {
    block.signature = (block.signature || "") + delta.signature;
  } else if (delta.type === "input_json_delta") {
    partial[index] += delta.partial_json;
    const input = parsePartial(partial[index]);
    if (input) view.show(input);
  } else if (delta.type === "citations_delta") {
    block.citations = [...(block.citations || []), delta.citation];
  }
}

function commit(messages, answer) {
  const last = messages[messages.length - 1];
  if (last && last.role === "assistant") {
    // A continued pause_turn: the answer carries on the same assistant turn.
    state.messages = [...messages.slice(0, -1), { role: "assistant", content: [...last.content, ...answer.content] }];
  } else {
    state.messages = [...messages, answer];
  }
}

function afterStop(stopReason, blocks, view) {
  if (stopReason === "pause_turn") {
    if ($("auto-continue").checked && state.autoContinues < MAX_AUTO_CONTINUES) {
      state.autoContinues += 1;
      view.body.append(el("div", "note", "Paused by the server; continuing automatically."));
      converse(state.messages);
      return;
    }
    const button = el("button", "continue", "Continue");
    button.type = "button";
    button.addEventListener("click", () => {
      button.remove();
      state.autoContinues = 0;
      converse(state.messages);
    });
    view.body.append(el("div", "note", "The server paused this turn (pause_turn)."), button);
    button.focus();
  } else if (stopReason === "tool_use") {
    const calls = blocks.filter((b) => b && b.type === "tool_use");
    if (calls.length) view.body.append(toolResultForm(calls));
  } else if (stopReason && stopReason !== "end_turn") {
    view.body.append(el("div", "note", `Stopped: ${stopReason}`));
  }
}

// The person answers the model's client tool calls: one text field per call.
function toolResultForm(calls) {
  const form = el("form", "tool-results");
  const fields = calls.map((call) => {
    const label = el("label", "", `Result of ${call.name}`);
    const input = el("textarea", "tool-result");
    input.rows = 2;
    input.dataset.toolUseId = call.id;
    submitOnEnter(input, form);
    const failed = el("label", "is-error");
    const box = el("input");
    box.type = "checkbox";
    failed.append(box, " is an error");
    label.append(input);
    form.append(label, failed);
    return { call, input, box };
  });
  const button = el("button", "", "Send tool results");
  button.type = "submit";
  form.append(button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.busy) return;
    const content = fields.map(({ call, input, box }) => ({
      type: "tool_result",
      tool_use_id: call.id,
      content: input.value,
      is_error: box.checked,
    }));
    form.remove();
    showUserTurn(fields.map(({ call, input }) => `${call.name} → ${input.value}`).join("\n"), []);
    state.autoContinues = 0;
    converse([...state.messages, { role: "user", content }]);
  });
  queueMicrotask(() => fields[0].input.focus());
  return form;
}

function requestBody(messages) {
  const model = $("model").value.trim();
  if (!model) throw new Error("Choose a model first.");
  const tools = [];
  const version = $("tool-version").value;
  if (version) tools.push({ type: version, name: "code_execution" });
  const clientTools = $("client-tools").value.trim();
  if (clientTools) {
    let parsed;
    try {
      parsed = JSON.parse(clientTools);
    } catch (error) {
      throw new Error(`Client tools are not valid JSON: ${error.message}`);
    }
    if (!Array.isArray(parsed)) throw new Error("Client tools must be a JSON list of tool definitions.");
    tools.push(...parsed);
  }
  const body = { model, max_tokens: Number($("max-tokens").value) || 4096, messages };
  if (tools.length) body.tools = tools;
  if (state.container && version) body.container = state.container;
  const system = $("system").value.trim();
  if (system) body.system = system;
  return body;
}

function setBusy(busy) {
  state.busy = busy;
  state.controller = busy ? new AbortController() : null;
  $("send").disabled = busy;
  $("stop").hidden = !busy;
  if (!busy) $("prompt").focus();
}

// ---- the person's side

function showUserTurn(text, files) {
  const view = messageView("user");
  if (text) view.body.append(el("div", "block text", text));
  for (const file of files) view.body.append(el("div", "block attachment", `Attached: ${file.filename}`));
  scrollToEnd();
}

function renderAttachments() {
  $("attachments").replaceChildren(...state.attachments.map((attachment) => {
    const item = el("li");
    const status = attachment.error ? ` — ${attachment.error}` : attachment.uploaded ? "" : " (uploading…)";
    item.append(el("span", attachment.error ? "error" : "", `${attachment.file.name}${status}`));
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.title = `Remove ${attachment.file.name}`;
    remove.addEventListener("click", () => {
      state.attachments = state.attachments.filter((a) => a !== attachment);
      renderAttachments();
    });
    item.append(remove);
    return item;
  }));
}

async function attach(files) {
  const added = [...files].map((file) => ({ file, uploaded: null, error: null }));
  state.attachments.push(...added);
  renderAttachments();
  await Promise.all(added.map(async (attachment) => {
    try {
      attachment.uploaded = await api.uploadFile(attachment.file);
    } catch (error) {
      attachment.error = describe(error);
      handleAuthFailure(error);
    }
    renderAttachments();
  }));
}

function send(event) {
  event.preventDefault();
  if (state.busy) return;
  if (state.attachments.some((a) => !a.uploaded && !a.error)) {
    setStatus("Still uploading…");
    return;
  }
  const text = $("prompt").value.trim();
  const uploads = state.attachments.filter((a) => a.uploaded).map((a) => a.uploaded);
  if (!text && !uploads.length) return;
  const content = [];
  if (text) content.push({ type: "text", text });
  for (const file of uploads) content.push({ type: "container_upload", file_id: file.id });
  state.attachments = [];
  renderAttachments();
  $("prompt").value = "";
  setStatus("");
  state.follow = true; // a new message brings the view back to the end
  showUserTurn(text, uploads);
  for (const file of uploads) listContainerFile(file, "upload");
  state.autoContinues = 0;
  converse([...state.messages, { role: "user", content }]);
}

// Enter (or Ctrl+Enter) sends; Shift+Enter is a new line.
function submitOnEnter(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

async function start() {
  $("composer").addEventListener("submit", send);
  $("conversation").addEventListener("scroll", noteScroll, { passive: true });
  submitOnEnter($("prompt"), $("composer"));
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("file-input").addEventListener("change", (event) => {
    attach(event.target.files);
    event.target.value = "";
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    api.storeKey($("api-key").value.trim());
    $("api-key").value = "";
    $("key-form").hidden = true;
    setStatus("");
    loadModels();
  });
  $("new-container").addEventListener("click", () => {
    state.container = null;
    $("container-id").textContent = "a new one with the next message";
    $("container-files").replaceChildren();
  });
  $("new-conversation").addEventListener("click", () => {
    if (state.busy) state.controller.abort();
    state.messages = [];
    state.container = null;
    $("conversation").replaceChildren();
    $("container-id").textContent = "none yet";
    $("container-files").replaceChildren();
    $("prompt").focus();
  });
  let keyRequired = true;
  try {
    keyRequired = (await api.session()).key_required;
  } catch (error) {
    setStatus(describe(error), true);
  }
  document.body.dataset.ready = "true";
  if (keyRequired && !api.storedKey()) askForKey();
  else {
    $("prompt").focus();
    await loadModels();
  }
}

start();
