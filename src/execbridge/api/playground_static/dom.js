// The one way the page makes elements: a tag, a class chosen by the page, and text as a text node.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
