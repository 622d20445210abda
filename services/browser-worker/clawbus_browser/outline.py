"""The snapshot script: run in the page, it reads the page's text and writes its outline.

The outline lists, in document order, the visible headings, images with a text alternative
and interactive elements (links, buttons, form fields, ARIA widgets), one per line:

    - heading "Account" [level=1]
    - textbox "Email" [ref=e1]: "ada@example.com"
    - checkbox "Remember me" [checked] [ref=e2]
    - button "Save" [ref=e3]
    - link "Docs" [ref=e4]

Each interactive element gets a ref (`e1`, `e2`, ... in document order), written to its
`data-clawbus-ref` attribute so an `act` call finds it with `[data-clawbus-ref="e3"]`. Every
snapshot clears the previous refs and numbers again. Frames and shadow roots are not entered.
"""

from __future__ import annotations

REF_ATTRIBUTE = "data-clawbus-ref"

SNAPSHOT_JS = """
({maxText, maxOutline, refAttribute}) => {
  const MAX_NAME = 100;
  const clean = (s) => (s || "").replace(/\\s+/g, " ").trim();
  const quote = (s) => {
    const text = clean(s);
    return JSON.stringify(text.length > MAX_NAME ? text.slice(0, MAX_NAME - 1) + "\\u2026" : text);
  };
  for (const el of document.querySelectorAll(`[${refAttribute}]`)) {
    el.removeAttribute(refAttribute);
  }
  const INPUT_ROLES = {
    button: "button", submit: "button", reset: "button", image: "button", file: "button",
    checkbox: "checkbox", radio: "radio", range: "slider", number: "spinbutton",
    search: "searchbox",
  };
  const INTERACTIVE = new Set([
    "button", "link", "textbox", "searchbox", "checkbox", "radio", "combobox", "listbox",
    "slider", "spinbutton", "switch", "tab", "menuitem", "menuitemcheckbox", "menuitemradio",
    "option", "treeitem",
  ]);
  const VALUED = new Set(["textbox", "searchbox", "spinbutton"]);
  const roleOf = (el) => {
    const explicit = clean(el.getAttribute("role")).split(" ")[0];
    if (explicit) return explicit;
    const tag = el.tagName.toLowerCase();
    if (tag === "a") return el.hasAttribute("href") ? "link" : null;
    if (tag === "button" || tag === "summary") return "button";
    if (tag === "input") {
      const type = (el.getAttribute("type") || "text").toLowerCase();
      return type === "hidden" ? null : (INPUT_ROLES[type] || "textbox");
    }
    if (tag === "textarea") return "textbox";
    if (tag === "select") return el.multiple || el.size > 1 ? "listbox" : "combobox";
    if (/^h[1-6]$/.test(tag)) return "heading";
    if (tag === "img") return "img";
    if (el.isContentEditable && !(el.parentElement && el.parentElement.isContentEditable)) {
      return "textbox";
    }
    return null;
  };
  const nameOf = (el, role) => {
    const labelledBy = clean(el.getAttribute("aria-labelledby"));
    if (labelledBy) {
      const text = labelledBy.split(" ").map((id) => {
        const label = document.getElementById(id);
        return label ? label.innerText || label.textContent : "";
      }).join(" ");
      if (clean(text)) return text;
    }
    if (clean(el.getAttribute("aria-label"))) return el.getAttribute("aria-label");
    if (el.labels && el.labels.length) {
      const text = Array.from(el.labels).map((label) => label.innerText).join(" ");
      if (clean(text)) return text;
    }
    const tag = el.tagName.toLowerCase();
    if (tag === "input") {
      const type = (el.getAttribute("type") || "text").toLowerCase();
      if (type === "submit") return el.value || "Submit";
      if (type === "reset") return el.value || "Reset";
      if (type === "button") return el.value;
      if (type === "image") return el.alt || el.value;
    }
    if (tag === "img") return el.alt || el.title;
    if (VALUED.has(role) || role === "combobox" || role === "listbox") {
      return el.getAttribute("placeholder") || el.title;
    }
    return el.innerText || el.textContent || el.title;
  };
  const visible = (el) => el.checkVisibility
    ? el.checkVisibility({visibilityProperty: true, checkVisibilityCSS: true})
    : el.getClientRects().length > 0;
  const root = document.body || document.documentElement;
  const lines = [];
  let size = 0;
  let outlineTruncated = false;
  let count = 0;
  if (root) {
    const skip = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE"]);
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT, {
      acceptNode: (el) => skip.has(el.tagName) || el.getAttribute("aria-hidden") === "true"
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
    });
    for (let el = walker.currentNode; el; el = walker.nextNode()) {
      const role = roleOf(el);
      if (!role || !(INTERACTIVE.has(role) || role === "heading" || role === "img")) continue;
      if (!visible(el)) continue;
      const name = clean(nameOf(el, role));
      let line;
      if (role === "heading") {
        const level = el.getAttribute("aria-level") || (/^H([1-6])$/.exec(el.tagName) || [])[1];
        line = `- heading ${quote(name)}` + (level ? ` [level=${level}]` : "");
      } else if (role === "img") {
        if (!name) continue;
        line = `- img ${quote(name)}`;
      } else {
        const ref = `e${++count}`;
        el.setAttribute(refAttribute, ref);
        const aria = (attribute) => el.getAttribute(attribute) === "true";
        const flags = [];
        if (el.checked === true || aria("aria-checked")) flags.push("checked");
        if (el.disabled === true || aria("aria-disabled")) flags.push("disabled");
        if (aria("aria-expanded")) flags.push("expanded");
        flags.push(`ref=${ref}`);
        line = `- ${role}` + (name ? ` ${quote(name)}` : "") + " "
          + flags.map((f) => `[${f}]`).join(" ");
        const shown = typeof el.value === "string" && el.value && el.type !== "password";
        if (VALUED.has(role) && shown) {
          line += `: ${quote(el.value)}`;
        } else if (el.tagName === "SELECT" && el.selectedOptions.length) {
          line += `: ${quote(Array.from(el.selectedOptions).map((o) => o.text).join(", "))}`;
        }
      }
      if (size + line.length + 1 > maxOutline) {
        outlineTruncated = true;
        break;
      }
      lines.push(line);
      size += line.length + 1;
    }
  }
  const text = root ? (root.innerText || "") : "";
  return {
    title: document.title,
    text: text.slice(0, maxText),
    textTruncated: text.length > maxText,
    outline: lines.join("\\n"),
    outlineTruncated,
  };
}
"""
