// toolhost dashboard: makes the pages live over server-sent events. The
// pages read the same without it, as of when they were loaded.
"use strict";
(() => {
  const fmt = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${s % 60}s`;
  };
  const tick = () => {
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = fmt(Date.now() - Number(el.dataset.since));
    }
  };
  setInterval(tick, 1000);
  const cell = (text, cls) => {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    return td;
  };
  const statusOf = (status) => {
    const span = document.createElement("span");
    span.className = `status status-${status}`;
    span.textContent = status;
    return span;
  };

  // The live calls of every session.
  const live = document.getElementById("live");
  if (live) {
    const own = live.dataset.ownSession;
    const cancellable = JSON.parse(document.getElementById("cancellable")?.textContent || "[]");
    const empty = document.getElementById("live-empty");
    const shown = () => { if (empty) empty.hidden = live.rows.length > 0; };
    const row = (c) => {
      const tr = document.createElement("tr");
      tr.id = `task-${c.task_id}`;
      const tool = cell();
      const a = document.createElement("a");
      a.href = `/calls/${encodeURIComponent(c.task_id)}`;
      a.textContent = c.tool;
      tool.append(a);
      const session = cell();
      const code = document.createElement("code");
      code.textContent = c.session_id;
      session.append(code, c.session_id === own ? " (here)" : "");
      const args = cell();
      const argsCode = document.createElement("code");
      const text = JSON.stringify(c.arguments ?? {});
      argsCode.textContent = text.length > 160 ? `${text.slice(0, 160)}…` : text;
      args.append(argsCode);
      const status = cell();
      status.append(statusOf(c.status));
      const elapsed = cell("", "num");
      elapsed.dataset.since = String(c.since_ms);
      const fuel = cell(String(c.fuel_used ?? 0), "num fuel");
      const latest = cell(c.latest ?? "", "latest");
      const action = cell();
      if (cancellable.includes(c.tool)) {
        const form = document.createElement("form");
        form.method = "post";
        form.action = `/calls/${encodeURIComponent(c.task_id)}/cancel`;
        const button = document.createElement("button");
        button.type = "submit";
        button.textContent = "Cancel";
        form.append(button);
        action.append(form);
      }
      tr.append(tool, session, args, status, elapsed, fuel, latest, action);
      return tr;
    };
    const events = new EventSource("/events");
    events.addEventListener("snapshot", (e) => {
      live.replaceChildren(...JSON.parse(e.data).map(row));
      shown();
      tick();
    });
    events.addEventListener("queued", (e) => {
      const ev = JSON.parse(e.data);
      if (document.getElementById(`task-${ev.task_id}`)) return;
      live.prepend(row({ ...ev, status: "queued", since_ms: Date.parse(ev.at) }));
      shown();
      tick();
    });
    events.addEventListener("started", (e) => {
      const ev = JSON.parse(e.data);
      const old = document.getElementById(`task-${ev.task_id}`);
      const fresh = row({ ...ev, status: "running", since_ms: Date.parse(ev.at) });
      if (old) {
        // A queued call started: keep its arguments from the snapshot.
        if (ev.arguments === undefined) fresh.cells[2].replaceWith(old.cells[2]);
        old.replaceWith(fresh);
      } else {
        live.prepend(fresh);
      }
      shown();
      tick();
    });
    events.addEventListener("updated", (e) => {
      const ev = JSON.parse(e.data);
      const tr = document.getElementById(`task-${ev.task_id}`);
      if (tr) {
        tr.querySelector(".latest").textContent = ev.message;
        tr.querySelector(".fuel").textContent = String(ev.fuel_used);
      }
    });
    events.addEventListener("ended", (e) => {
      const ev = JSON.parse(e.data);
      document.getElementById(`task-${ev.task_id}`)?.remove();
      shown();
    });
    events.addEventListener("pool", (e) => {
      const use = JSON.parse(e.data);
      const pool = document.getElementById("pool");
      if (!pool) return;
      const parts = [`Instance pool: ${use.held} of ${use.size} in use`];
      if (use.waiting > 0) {
        const waiting = document.createElement("strong");
        waiting.textContent = `${use.waiting} waiting for one`;
        parts.push(", ", waiting);
      }
      pool.replaceChildren(...parts, ".");
    });
    // Events were lost: start again from a snapshot.
    events.addEventListener("lagged", () => location.reload());
  }

  // One call's page, while the call runs.
  const call = document.getElementById("call");
  if (call && call.dataset.live === "true") {
    const updates = document.getElementById("updates");
    const events = new EventSource(`/events?task=${encodeURIComponent(call.dataset.task)}`);
    events.addEventListener("started", () => {
      document.getElementById("call-status")?.replaceChildren(statusOf("running"));
    });
    events.addEventListener("updated", (e) => {
      const ev = JSON.parse(e.data);
      const li = document.createElement("li");
      const time = document.createElement("time");
      time.dateTime = ev.at;
      time.textContent = ev.at.replace("T", " ");
      li.append(time, ` ${ev.message}`);
      updates.append(li);
      document.getElementById("no-updates")?.remove();
      const fuel = document.getElementById("call-fuel");
      if (fuel) fuel.textContent = `${ev.fuel_used} so far`;
    });
    // The page as the server shows an ended call: result, fuel, duration.
    const reload = () => { events.close(); location.reload(); };
    events.addEventListener("ended", reload);
    events.addEventListener("lagged", reload);
  }
  tick();
})();
