// The @mention syntax, defined once: `@` then a display name or a user id,
// case-insensitive, at the start or after a non-word character, and ended by
// a non-word character or the end. A name may hold spaces (the completion
// writes it whole); of the names that fit at one `@`, the longest wins, so
// "@Ann Lee" is Ann Lee even when someone is called Ann.
// Pure functions: no DOM, no store.

const WORD = /[\p{L}\p{N}_]/u;
const isWord = (ch) => ch !== undefined && WORD.test(ch);

/** Lower-cased labels (names and ids) of `people` ([{id, name}]), longest first. */
function labelsOf(people) {
  const labels = [];
  for (const p of people) {
    if (!p || typeof p.id !== "string" || !p.id) continue;
    labels.push({ id: p.id, label: p.id.toLowerCase() });
    if (typeof p.name === "string" && p.name.trim()) labels.push({ id: p.id, label: p.name.trim().toLowerCase() });
  }
  return labels.sort((a, b) => b.label.length - a.label.length);
}

/**
 * Splits `text` into plain parts and mentions of `people`:
 * `[{text}, {text: "@Ann", id}, ...]`.
 */
export function mentionParts(text, people) {
  if (!text.includes("@")) return text ? [{ text }] : [];
  const labels = labelsOf(people);
  const lower = text.toLowerCase();
  const parts = [];
  let last = 0;
  for (let at = lower.indexOf("@"); at >= 0; at = lower.indexOf("@", at + 1)) {
    if (at < last || isWord(text[at - 1])) continue;
    const hit = labels.find(
      ({ label }) => lower.startsWith(label, at + 1) && !isWord(text[at + 1 + label.length]),
    );
    if (!hit) continue;
    if (at > last) parts.push({ text: text.slice(last, at) });
    const end = at + 1 + hit.label.length;
    parts.push({ text: text.slice(at, end), id: hit.id });
    last = end;
  }
  if (last < text.length) parts.push({ text: text.slice(last) });
  return parts;
}

/** Whether `text` mentions the user `me` ({id, name}). */
export function mentionsUser(text, me) {
  return mentionParts(text, [me]).some((p) => p.id === me.id);
}

/**
 * The mention being typed at `caret`: `{start, query}` where `start` is the
 * index of its `@`, or null. The query runs from the `@` to the caret and may
 * hold spaces only when people's names do (checked by the caller's filter).
 */
export function mentionQuery(text, caret) {
  const before = text.slice(0, caret);
  const at = before.lastIndexOf("@");
  if (at < 0 || isWord(before[at - 1])) return null;
  const query = before.slice(at + 1);
  if (query.includes("\n") || query.length > 64 || /\s{2}|^\s/.test(query)) return null;
  return { start: at, query };
}

/** People whose name or id starts with `query` (case-insensitive), by name; at most `max`. */
export function completions(query, people, max = 8) {
  const q = query.toLowerCase();
  const out = [];
  for (const p of people) {
    const name = (p.name || p.id).toLowerCase();
    if (name.startsWith(q) || p.id.toLowerCase().startsWith(q)) out.push(p);
  }
  out.sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  return out.slice(0, max);
}

/** The composer's text once the mention at `start..caret` is completed to `person`. */
export function completeMention(text, start, caret, person) {
  const rest = text.slice(caret);
  const insert = `@${person.name || person.id}${/^\s/.test(rest) ? "" : " "}`;
  const end = start + insert.length + (/^\s/.test(rest) ? 1 : 0);
  return { text: text.slice(0, start) + insert + rest, caret: end };
}
