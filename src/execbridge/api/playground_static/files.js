// Files the code made, shown safely: a raster image (PNG, JPEG, GIF, WebP) only when both the media
// type the gateway recorded and the file's first bytes say so; anything else only as a download.
// SVG, HTML and PDF can carry script or links, so they are never rendered, only downloaded.
// Images are shown from the page's own blob: copies (the download route needs the key in a header).

import { fileBytes, fileMetadata } from "./api.js";

const SIGNATURES = {
  "image/png": [[0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
  "image/jpeg": [[0xff, 0xd8, 0xff]],
  "image/gif": [[0x47, 0x49, 0x46, 0x38, 0x37, 0x61], [0x47, 0x49, 0x46, 0x38, 0x39, 0x61]],
  "image/webp": [[0x52, 0x49, 0x46, 0x46, null, null, null, null, 0x57, 0x45, 0x42, 0x50]],
};

// The raster type these bytes are, or null.
export function rasterType(bytes) {
  for (const [type, patterns] of Object.entries(SIGNATURES)) {
    for (const pattern of patterns) {
      if (bytes.length >= pattern.length && pattern.every((b, i) => b === null || bytes[i] === b)) return type;
    }
  }
  return null;
}

export function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function imageElement(bytes, type, alt) {
  const img = document.createElement("img");
  img.className = "output-image";
  img.alt = alt;
  img.src = URL.createObjectURL(new Blob([bytes], { type }));
  return img;
}

// A button that fetches the file with the key and saves it; octet-stream, so the browser never renders it.
export function downloadButton(fileId, filename) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "download";
  button.textContent = `Download ${filename}`;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const bytes = await fileBytes(fileId);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
      link.download = filename;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    } catch (error) {
      button.textContent = `Download ${filename} failed: ${error.describe ? error.describe() : error.message}`;
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// The element showing one output file, and its metadata (for the container's file list).
export async function outputFile(fileId) {
  const figure = document.createElement("figure");
  figure.className = "output-file";
  let meta;
  try {
    meta = await fileMetadata(fileId);
  } catch (error) {
    figure.textContent = `${fileId}: ${error.describe ? error.describe() : error.message}`;
    return { element: figure, meta: { id: fileId, filename: fileId } };
  }
  const caption = document.createElement("figcaption");
  caption.textContent = `${meta.filename} (${meta.mime_type}, ${meta.size_bytes} bytes)`;
  if (meta.mime_type in SIGNATURES) {
    try {
      const bytes = await fileBytes(fileId);
      const type = rasterType(bytes);
      if (type === meta.mime_type) figure.append(imageElement(bytes, type, meta.filename));
      else caption.textContent += " — not shown: its contents are not that image type";
    } catch (error) {
      caption.textContent += ` — ${error.describe ? error.describe() : error.message}`;
    }
  }
  figure.append(caption);
  if (meta.downloadable) figure.append(downloadButton(fileId, meta.filename));
  return { element: figure, meta };
}
