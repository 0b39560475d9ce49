// Example plugin in JavaScript: Markdown analysis.
//
// `markdown_outline` turns one document into its outline (headings with
// their anchors), its links (checking the #anchors that point into the
// document) and word statistics. `markdown_report` does the same for a set
// of documents and also checks the links between them ("guide.md#install"),
// reporting progress document by document; it can be cancelled and then
// returns what it has so far.
//
// The plugin needs no permissions: the documents arrive as arguments.

import {
  InvalidArguments,
  cancelled,
  defineTool,
  output,
  sleep,
  update,
} from "../js/toolhost.js";

export { tool } from "../js/toolhost.js";

const WORDS_PER_MINUTE = 200;
const MAX_DOCUMENTS = 100;
const MAX_DELAY_MS = 1000;

// GitHub's anchors: lowercase, punctuation dropped, spaces to dashes, and
// -1, -2, … for repeated headings. (The engine's regular expressions have
// no Unicode property escapes, so every non-ASCII character is kept.)
function slugger() {
  const seen = new Map();
  return (title) => {
    const base = title
      .toLowerCase()
      .replace(/[^a-z0-9\s_\u0080-\uffff-]/g, "")
      .trim()
      .replace(/\s/g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    return n === 0 ? base : `${base}-${n}`;
  };
}

// Inline Markdown to plain text, for headings and word counts.
function plain(text) {
  return text
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1")
    .replace(/!?\[([^\]]*)\]\[[^\]]*\]/g, "$1")
    .replace(/`([^`]*)`/g, "$1")
    .replace(/(\*\*|__|\*|_|~~)(.+?)\1/g, "$2")
    .replace(/<[^>]+>/g, "")
    .trim();
}

const INLINE_LINK = /(!?)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g;
const REFERENCE_LINK = /(!?)\[([^\]]*)\]\[([^\]]*)\]/g;
const AUTOLINK = /<((?:https?|mailto):[^>\s]+)>/g;
const DEFINITION = /^ {0,3}\[([^\]]+)\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/;

/** One document: outline, links and statistics. */
function analyse(markdown) {
  const slug = slugger();
  const headings = [];
  const links = [];
  const definitions = new Map();
  const references = [];
  let words = 0;
  let codeBlocks = 0;
  let fence = null;
  const lines = markdown.split(/\r?\n/);

  lines.forEach((line, i) => {
    const lineNo = i + 1;
    const fenceMatch = /^ {0,3}(`{3,}|~{3,})/.exec(line);
    if (fence) {
      if (fenceMatch && fenceMatch[1][0] === fence[0] && fenceMatch[1].length >= fence.length) {
        fence = null;
      }
      return;
    }
    if (fenceMatch) {
      fence = fenceMatch[1];
      codeBlocks += 1;
      return;
    }
    const definition = DEFINITION.exec(line);
    if (definition) {
      definitions.set(definition[1].toLowerCase(), definition[2]);
      return;
    }

    const atx = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    const next = lines[i + 1] ?? "";
    const setext = line.trim() !== "" && !atx && /^ {0,3}(=+|-+)\s*$/.exec(next);
    if (atx || setext) {
      const level = atx ? atx[1].length : setext[1][0] === "=" ? 1 : 2;
      const title = plain(atx ? atx[2] : line);
      headings.push({ level, title, anchor: slug(title), line: lineNo });
    }
    if (/^ {0,3}(=+|-+)\s*$/.test(line) && headings.at(-1)?.line === lineNo - 1) return;

    for (const m of line.matchAll(INLINE_LINK)) {
      links.push({ text: plain(m[2]), target: m[3], image: m[1] === "!", line: lineNo });
    }
    for (const m of line.matchAll(REFERENCE_LINK)) {
      references.push({ text: plain(m[2]), ref: (m[3] || m[2]).toLowerCase(), image: m[1] === "!", line: lineNo });
    }
    for (const m of line.matchAll(AUTOLINK)) {
      links.push({ text: m[1], target: m[1], image: false, line: lineNo });
    }
    words += plain(line.replace(/^\s*([#>*+-]|\d+\.)+\s*/, ""))
      .split(/\s+/)
      .filter((w) => /[a-zA-Z0-9\u0080-\uffff]/.test(w)).length;
  });

  for (const r of references) {
    const target = definitions.get(r.ref);
    const link = { text: r.text, target: target ?? `[${r.ref}]`, image: r.image, line: r.line };
    if (target === undefined) link.undefined_reference = true;
    links.push(link);
  }
  links.sort((a, b) => a.line - b.line);

  return {
    headings,
    links,
    stats: {
      lines: lines.length,
      words,
      reading_minutes: Math.max(1, Math.round(words / WORDS_PER_MINUTE)),
      headings: headings.length,
      links: links.filter((l) => !l.image).length,
      images: links.filter((l) => l.image).length,
      code_blocks: codeBlocks,
    },
  };
}

function kind(target) {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return "external";
  if (target.startsWith("#")) return "anchor";
  return "relative";
}

// Which links point at nothing: a missing anchor, an undefined reference,
// or (when `documents` is given) a missing .md document or an anchor
// missing in it. Images and other files are not checked.
function brokenLinks(name, doc, documents) {
  const broken = [];
  for (const link of doc.links) {
    if (link.undefined_reference) {
      broken.push({ ...link, reason: "undefined reference" });
      continue;
    }
    const k = kind(link.target);
    // Only links to Markdown documents can be checked against the set.
    if (k === "external" || link.image) continue;
    if (k === "relative" && (!documents || !/\.(md|markdown)(#|$)/i.test(link.target))) continue;
    const [file, anchor] = k === "anchor" ? [name, link.target.slice(1)] : link.target.split("#", 2);
    const path = k === "anchor" || file === "" ? name : resolvePath(name, file);
    const into = documents ? documents.get(path) : doc;
    if (!into) {
      broken.push({ ...link, reason: `no document ${path}` });
    } else if (anchor && !into.headings.some((h) => h.anchor === decodeURIComponent(anchor))) {
      broken.push({ ...link, reason: `no heading #${anchor} in ${path ?? "this document"}` });
    }
  }
  return broken.map(({ undefined_reference, ...link }) => link);
}

// `target` as seen from the document `from`: "docs/a.md" + "../b.md" is "b.md".
function resolvePath(from, target) {
  const parts = target.startsWith("/") ? [] : from.split("/").slice(0, -1);
  for (const part of target.split("/")) {
    if (part === "..") parts.pop();
    else if (part !== "." && part !== "") parts.push(part);
  }
  return parts.join("/");
}

function outlineText(headings) {
  return headings.map((h) => `${"  ".repeat(h.level - 1)}- ${h.title}`).join("\n");
}

function describeBroken(broken) {
  return broken.map((l) => `line ${l.line}: ${l.target} (${l.reason})`).join("; ");
}

defineTool(
  {
    name: "markdown_outline",
    description:
      "Outlines a Markdown document: its headings with anchors, its links (and which #anchors point nowhere) and word statistics.",
    schema: {
      type: "object",
      properties: { markdown: { type: "string", description: "The Markdown text." } },
      required: ["markdown"],
    },
  },
  ({ markdown }) => {
    if (markdown.trim() === "") throw new InvalidArguments("markdown is empty");
    const doc = analyse(markdown);
    const broken = brokenLinks(undefined, doc, undefined);
    const { words, reading_minutes, links } = doc.stats;
    let text = `${doc.headings.length} headings, ${links} links, ${words} words (about ${reading_minutes} min to read).`;
    if (doc.headings.length) text += `\n${outlineText(doc.headings)}`;
    if (broken.length) text += `\nBroken links: ${describeBroken(broken)}.`;
    return output(text, { ...doc, broken_links: broken });
  },
);

defineTool(
  {
    name: "markdown_report",
    description:
      "Checks a set of Markdown documents: the outline and statistics of each, and every link between them (\"guide.md#install\") that points at a missing document or heading. Reports progress document by document; can be cancelled.",
    schema: {
      type: "object",
      properties: {
        documents: {
          type: "array",
          minItems: 1,
          maxItems: MAX_DOCUMENTS,
          items: {
            type: "object",
            properties: {
              name: { type: "string", description: "The document's path, as links name it (docs/guide.md)." },
              markdown: { type: "string" },
            },
            required: ["name", "markdown"],
          },
        },
        delay_ms: {
          type: ["integer", "null"],
          minimum: 0,
          maximum: MAX_DELAY_MS,
          default: 0,
          description: "An artificial pause after each document, so progress is visible in demos.",
        },
      },
      required: ["documents"],
    },
    onDuplicate: "reject",
    duplicateScope: "name-and-arguments",
    cancellable: true,
  },
  async ({ documents, delay_ms }) => {
    const names = new Set();
    for (const d of documents) {
      if (names.has(d.name)) throw new InvalidArguments(`two documents are named ${d.name}`);
      names.add(d.name);
    }
    // First every outline (links may point forward), then the links.
    const analysed = new Map();
    let stopped = false;
    for (const [i, d] of documents.entries()) {
      if (cancelled()) {
        stopped = true;
        break;
      }
      analysed.set(d.name, analyse(d.markdown));
      if (i + 1 < documents.length) {
        update(`outlined ${i + 1} of ${documents.length} documents: ${d.name}`);
        if (delay_ms > 0) await sleep(delay_ms);
      }
    }
    const report = [];
    let brokenCount = 0;
    for (const [name, doc] of analysed) {
      const broken = stopped ? [] : brokenLinks(name, doc, analysed);
      brokenCount += broken.length;
      report.push({ name, ...doc.stats, outline: doc.headings, broken_links: broken });
    }
    const words = report.reduce((n, r) => n + r.words, 0);
    let text = stopped
      ? `cancelled after ${analysed.size} of ${documents.length} documents (links not checked).`
      : `${documents.length} documents, ${words} words, ${brokenCount} broken links.`;
    for (const r of report) {
      if (r.broken_links.length) text += `\n${r.name}: ${describeBroken(r.broken_links)}`;
    }
    return output(text, { documents: report, broken_links: brokenCount, cancelled: stopped });
  },
);
