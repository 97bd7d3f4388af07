// The object a prefix of a JSON text describes so far, or null when the prefix cannot be closed yet.
// A streamed tool call arrives as fragments of its input's JSON; closing the open string, arrays and
// objects of what has arrived lets the page show the code as the model writes it.

export function parsePartial(text) {
  let inString = false;
  let escaped = false;
  const closers = [];
  for (const ch of text) {
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === "\\") escaped = true;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "{") closers.push("}");
    else if (ch === "[") closers.push("]");
    else if (ch === "}" || ch === "]") closers.pop();
  }
  let candidate = text;
  if (inString) {
    // Drop an escape cut in half: a lone backslash, or \u with fewer than four digits (when that
    // backslash is not itself escaped: an odd run of backslashes).
    if (escaped) candidate = candidate.slice(0, -1);
    else {
      const cut = /(\\+)u[0-9a-fA-F]{0,3}$/.exec(candidate);
      if (cut && cut[1].length % 2 === 1) candidate = candidate.slice(0, cut.index + cut[1].length - 1);
    }
    candidate += '"';
  }
  candidate += closers.reverse().join("");
  try {
    return JSON.parse(candidate);
  } catch {
    return null;
  }
}
