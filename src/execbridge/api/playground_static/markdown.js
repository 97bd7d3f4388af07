// A small markdown subset for the model's text, built as DOM nodes: paragraphs, headings, bullet and
// numbered lists, fenced code, inline `code` and **bold**. Every piece of text becomes a text node;
// no HTML is parsed, and links stay as the characters the model wrote (no href from untrusted text).

import { el } from "./dom.js";

const FENCE = /^\s*```/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d{1,9}[.)]\s+(.*)$/;
const INLINE = /(`[^`\n]+`|\*\*[^*\n]+\*\*)/;

export function inline(text) {
  const parts = [];
  for (const piece of text.split(INLINE)) {
    if (!piece) continue;
    if (piece.length > 2 && piece.startsWith("`") && piece.endsWith("`")) parts.push(el("code", "", piece.slice(1, -1)));
    else if (piece.length > 4 && piece.startsWith("**") && piece.endsWith("**")) {
      parts.push(el("strong", "", piece.slice(2, -2)));
    } else parts.push(document.createTextNode(piece));
  }
  return parts;
}

// The nodes for a whole (possibly still growing) text.
export function render(text) {
  const nodes = [];
  const lines = text.split("\n");
  let paragraph = [];
  let list = null;
  const flush = () => {
    if (paragraph.length) {
      const p = el("p");
      p.append(...inline(paragraph.join("\n")));
      nodes.push(p);
    }
    paragraph = [];
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (FENCE.test(line)) {
      flush();
      const code = [];
      for (i++; i < lines.length && !FENCE.test(lines[i]); i++) code.push(lines[i]);
      nodes.push(el("pre", "code", code.join("\n")));
      continue;
    }
    const heading = HEADING.exec(line);
    const bullet = BULLET.exec(line);
    const numbered = bullet ? null : NUMBERED.exec(line);
    if (heading) {
      flush();
      const h = el("div", `heading h${heading[1].length}`);
      h.append(...inline(heading[2]));
      nodes.push(h);
    } else if (bullet || numbered) {
      const tag = bullet ? "ul" : "ol";
      if (paragraph.length || !list || list.tagName.toLowerCase() !== tag) {
        flush();
        list = el(tag);
        nodes.push(list);
      }
      const item = el("li");
      item.append(...inline((bullet || numbered)[1]));
      list.append(item);
    } else if (line.trim() === "") {
      flush();
    } else {
      if (list) list = null;
      paragraph.push(line);
    }
  }
  flush();
  return nodes;
}
