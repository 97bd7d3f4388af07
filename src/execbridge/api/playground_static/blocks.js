// Content blocks as DOM. Everything a model or its code produced is untrusted: it only ever becomes
// textContent (never innerHTML), class names are chosen here, and files go through files.js.

import { el } from "./dom.js";
import { base64Bytes, imageElement, rasterType } from "./files.js";
import { render } from "./markdown.js";

export { el };

// The model's text, drawn again (as markdown, markdown.js) at most once per frame while it streams.
export function textBlock() {
  const element = el("div", "block text");
  let text = "";
  let pending = false;
  const draw = () => {
    pending = false;
    element.replaceChildren(...render(text));
  };
  const append = (more) => {
    text += more;
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  };
  const finish = () => {
    if (pending) draw(); // the last frame may not have come yet: the finished block is drawn now
  };
  return { element, append, finish };
}

export function thinkingBlock() {
  const element = el("details", "block thinking");
  element.append(el("summary", "", "Thinking"));
  const body = el("div", "thinking-text");
  element.append(body);
  return { element, append: (text) => body.append(text) };
}

const SUB_TOOLS = {
  code_execution: "Python",
  bash_code_execution: "bash",
  text_editor_code_execution: "editor",
};

// A server_tool_use or client tool_use block; show(input) redraws it as its input grows.
export function callBlock(block) {
  const server = block.type === "server_tool_use";
  const element = el("div", `block call ${server ? "server" : "client"}`);
  element.dataset.toolUseId = block.id;
  const title = el("div", "call-title");
  const body = el("div", "call-body");
  element.append(title, body);
  const show = (input) => {
    input = input || {};
    body.replaceChildren();
    if (!server) {
      title.textContent = `Tool call: ${block.name}`;
      body.append(el("pre", "code", JSON.stringify(input, null, 2)));
    } else if (block.name === "code_execution") {
      title.textContent = SUB_TOOLS.code_execution;
      body.append(el("pre", "code", input.code ?? ""));
    } else if (block.name === "bash_code_execution") {
      title.textContent = SUB_TOOLS.bash_code_execution;
      body.append(el("pre", "code bash", `$ ${input.command ?? ""}`));
    } else if (block.name === "text_editor_code_execution") {
      title.textContent = `${SUB_TOOLS.text_editor_code_execution}: ${input.command ?? ""} ${input.path ?? ""}`;
      if (input.command === "create") body.append(el("pre", "code", input.file_text ?? ""));
      if (input.command === "str_replace") body.append(diff(lines(input.old_str), lines(input.new_str)));
    } else {
      title.textContent = block.name;
      body.append(el("pre", "code", JSON.stringify(input, null, 2)));
    }
  };
  show(block.input);
  return { element, show };
}

function lines(text) {
  return typeof text === "string" ? text.split("\n") : [];
}

function diff(removed, added) {
  const pre = el("pre", "code diff");
  for (const line of removed) pre.append(el("span", "del", `-${line}\n`));
  for (const line of added) pre.append(el("span", "add", `+${line}\n`));
  return pre;
}

function output(pre, className, label) {
  const wrap = el("div", `stream ${className}`);
  wrap.append(el("div", "stream-label", label), el("pre", "", pre));
  return wrap;
}

// A *_tool_result block. onFile(fileId, slot) fills in each output file; returns the element.
export function resultBlock(block, onFile) {
  const element = el("div", "block result");
  element.dataset.toolUseId = block.tool_use_id;
  const content = block.content || {};
  const type = String(content.type || "");
  if (type.endsWith("_tool_result_error")) {
    element.classList.add("failed");
    const message = content.error_message ? `: ${content.error_message}` : "";
    element.append(el("div", "error", `Tool error ${content.error_code}${message}`));
  } else if (type === "code_execution_result" || type === "bash_code_execution_result"
      || type === "encrypted_code_execution_result") {
    if (content.stdout) element.append(output(content.stdout, "stdout", "stdout"));
    if (type === "encrypted_code_execution_result") element.append(el("div", "note", "(encrypted output)"));
    if (content.stderr) element.append(output(content.stderr, "stderr", "stderr"));
    const code = content.return_code;
    element.append(el("div", code === 0 ? "exit ok" : "exit failed", `exit code ${code}`));
    for (const file of content.content || []) {
      const slot = el("div", "file-slot", `loading ${file.file_id}…`);
      element.append(slot);
      onFile(file.file_id, slot);
    }
  } else if (type === "text_editor_code_execution_view_result") {
    element.append(viewResult(content));
  } else if (type === "text_editor_code_execution_create_result") {
    element.append(el("div", "note", content.is_file_update ? "File replaced" : "File created"));
  } else if (type === "text_editor_code_execution_str_replace_result") {
    const pre = el("pre", "code diff");
    for (const line of content.lines || []) {
      pre.append(el("span", line.startsWith("-") ? "del" : line.startsWith("+") ? "add" : "", `${line}\n`));
    }
    element.append(el("div", "note", `Edited at line ${content.old_start ?? "?"}`), pre);
  } else {
    element.append(el("pre", "code", JSON.stringify(block, null, 2)));
  }
  return element;
}

function viewResult(content) {
  if (content.file_type === "image") {
    const bytes = base64Bytes(content.content || "");
    const type = rasterType(bytes);
    return type ? imageElement(bytes, type, "viewed image") : el("div", "note", "(an image the page will not show)");
  }
  if (content.file_type === "pdf") return el("div", "note", "(a PDF file)");
  const first = content.start_line ?? 1;
  const wrap = el("div", "view");
  const lineCount = content.num_lines ?? "?";
  const total = content.total_lines ?? "?";
  wrap.append(el("div", "note", `lines ${first}–${first + (Number(lineCount) || 1) - 1} of ${total}`));
  wrap.append(el("pre", "code", content.content ?? ""));
  return wrap;
}

export function errorNote(text) {
  return el("div", "block error", text);
}
