// chime-gateway key page: talks to /api/ on the same origin. The admin token
// (when the gateway requires one) lives in sessionStorage and travels in the
// Authorization header; every request also carries X-Chime-Gateway-Admin,
// which a cross-site page cannot add without a CORS grant this server never gives.
"use strict";

const $ = (sel) => document.querySelector(sel);
let session = null;
let users = [];

function token() { return sessionStorage.getItem("chime-admin-token") || ""; }

async function api(method, path, body) {
  const headers = { "X-Chime-Gateway-Admin": "1" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch("/api/" + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store",
  });
  const doc = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((doc.error && doc.error.message) || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return doc;
}

function say(text, isError) {
  const s = $("#status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null || text === "" ? "–" : text;
  if (cls) td.className = cls;
  return td;
}

function button(label, action, user, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.user = user;
  b.setAttribute("aria-label", label + " for " + user);
  if (cls) b.className = cls;
  return b;
}

function current(u) {
  const active = u.keys.filter((k) => k.status === "active");
  return active.length ? active[active.length - 1] : u.keys[u.keys.length - 1] || null;
}

function render() {
  const q = $("#filter").value.trim().toLowerCase();
  const tbody = $("#users tbody");
  tbody.replaceChildren();
  for (const u of users) {
    const k = current(u);
    const hay = [u.name, u.role, u.tier, u.queues.join(","), ...u.keys.map((x) => x.fingerprint)].join(" ").toLowerCase();
    if (q && !hay.includes(q)) continue;
    const tr = document.createElement("tr");
    tr.dataset.user = u.name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = u.name;
    tr.append(th, cell(u.role), cell(u.role === "admin" ? "all" : u.queues.join(", ")), cell(u.tier),
      cell(k && k.fingerprint, "mono"), cell(k && k.created), cell(k && k.last_used));
    const status = k ? k.status : "no key";
    tr.append(cell(status, "status-" + status.replace(/ /g, "-")));
    const actions = document.createElement("td");
    actions.className = "actions";
    if (session.editable) {
      if (u.keys.some((x) => x.status === "active")) {
        actions.append(button("Rotate key", "rotate", u.name), " ", button("Revoke", "revoke", u.name, "secondary"));
      } else {
        actions.append(button("Generate key", "generate", u.name));
      }
    }
    tr.append(actions);
    tbody.append(tr);
  }
}

async function refresh() {
  users = (await api("GET", "users")).users;
  render();
}

function confirmDialog(title, text, okLabel, withGrace) {
  const d = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  $("#grace-row").hidden = !withGrace;
  $("#grace").value = "";
  d.returnValue = "";
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
    $("#confirm-cancel").focus();
  });
}

function showKey(doc) {
  $("#key-user").textContent = doc.user;
  $("#new-key").value = doc.key;
  $("#key-retired").textContent = doc.retired.length
    ? "Old key " + doc.retired.map((r) => r.fingerprint + " stops working at " + r.until).join("; ") + "."
    : "";
  $("#key-dialog").showModal();
  $("#new-key").select();
}

async function act(action, user) {
  try {
    if (action === "generate") {
      showKey(await api("POST", "users/" + encodeURIComponent(user) + "/keys", {}));
      say("Generated a key for " + user + ".");
    } else if (action === "rotate") {
      const fp = current(users.find((u) => u.name === user)).fingerprint;
      const ok = await confirmDialog("Rotate " + user + "'s key?",
        "A new key is generated. The current key (" + fp + ") stops working — anything still using it will be refused.",
        "Rotate key", true);
      if (!ok) { say("Rotation cancelled."); return; }
      const grace = $("#grace").value;
      const body = grace ? { rotate: true, grace } : { rotate: true };
      showKey(await api("POST", "users/" + encodeURIComponent(user) + "/keys", body));
      say("Rotated " + user + "'s key.");
    } else if (action === "revoke") {
      const ok = await confirmDialog("Revoke " + user + "'s keys?",
        "Every active key of " + user + " stops working at once.", "Revoke", false);
      if (!ok) { say("Nothing revoked."); return; }
      const doc = await api("DELETE", "users/" + encodeURIComponent(user) + "/keys");
      say("Revoked " + doc.revoked.join(", ") + ".");
    }
    await refresh();
  } catch (e) {
    say(e.message, true);
  }
}

async function start() {
  try {
    session = await api("GET", "session");
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem("chime-admin-token");
      $("#signin").hidden = false;
      $("#app").hidden = true;
      $("#token").focus();
      if (token()) say(e.message, true);
      return;
    }
    throw e;
  }
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#store-note").textContent = "key store: " + session.store + (session.editable ? "" : " (read-only)");
  const tier = $("#tier-select");
  tier.replaceChildren(...session.tiers.map((t) => new Option(t, t, t === "default", t === "default")));
  $("#add-user").hidden = !session.editable;
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("chime-admin-token", $("#token").value.trim());
    $("#token").value = "";
    start().catch((e) => say(e.message, true));
  });
  $("#filter").addEventListener("input", render);
  $("#users").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (b) act(b.dataset.action, b.dataset.user);
  });
  $("#copy-key").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("#new-key").value);
      say("Key copied to the clipboard.");
    } catch {
      $("#new-key").select();
      say("Select the key and copy it (Ctrl+C): the browser refused clipboard access.", true);
    }
  });
  $("#key-done").addEventListener("click", () => {
    $("#new-key").value = "";
    $("#key-dialog").close();
  });
  $("#add-user").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const queues = f.queues.value.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    try {
      await api("POST", "users", { name: f.name.value.trim(), role: f.role.value, queues, tier: f.tier.value });
      say("Added " + f.name.value.trim() + ".");
      f.reset();
      await refresh();
    } catch (e) {
      say(e.message, true);
    }
  });
  start().catch((e) => say(e.message, true));
});
