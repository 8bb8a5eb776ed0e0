// flowledger board: keeps pages current by polling the JSON API, opens a step's task, performs actions.
// Plain DOM, no framework; every text from the ledger goes in through textContent, never innerHTML.
(function () {
  "use strict";
  const TOKEN_KEY = "flowledger-board-token";
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return ms + " ms";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60), rest = Math.floor(s % 60);
    if (m < 60) return m + "m " + String(rest).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
  }
  function fmtWhen(iso) { return iso ? iso.replace("T", " ").replace(".000Z", "Z") : "–"; }
  function setBadge(holder, status) {
    let badge = holder.classList.contains("badge") ? holder : $(".badge", holder);
    if (!badge) { badge = document.createElement("span"); badge.className = "badge"; holder.replaceChildren(badge); }
    badge.dataset.status = status;
    badge.textContent = status.replace(/_/g, " ");
  }
  function live(ok, why) {
    const el = $("#live");
    if (!el) return;
    el.hidden = false;
    el.classList.toggle("stale", !ok);
    $(".live-text", el).textContent = ok ? "live" : "offline";
    el.title = ok ? "updating every second" : (why || "the board cannot reach the ledger");
  }
  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
    return body;
  }
  function poll(fn, everyMs) {
    let stopped = false;
    async function tick() {
      if (stopped) return;
      let again = true;
      try { again = (await fn()) !== false; live(true); } catch (err) { live(false, err.message); }
      if (again) setTimeout(tick, everyMs); else stopped = true;
    }
    setTimeout(tick, everyMs);
  }
  function toast(text, bad) {
    const el = $("#toast");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  // --- the flow page: the graph and the steps table follow /api/flows/<id> -----------------------------
  function stepDuration(step) {
    if (step.duration_ms !== null && step.duration_ms !== undefined) return step.duration_ms;
    if (step.status === "running" && step.started_at) return Math.max(0, Date.now() - Date.parse(step.started_at));
    return null;
  }
  function applyStep(step) {
    const node = $$("svg.graph .step").find((g) => g.dataset.stepId === step.step_id);
    const attempts = step.attempts + (step.attempts === 1 ? " attempt" : " attempts");
    if (node) {
      node.dataset.status = step.status;
      node.dataset.taskId = step.task_id || "";
      $('[data-field="status"]', node).textContent = step.status.replace(/_/g, " ");
      $('[data-field="attempts"]', node).textContent = attempts;
      $('[data-field="duration"]', node).textContent = fmtDuration(stepDuration(step));
      $("title", node).textContent = step.step_id + ": " + step.status;
    }
    const row = $$("tr[data-step-row]").find((tr) => tr.dataset.stepRow === step.step_id);
    if (row) {
      setBadge($('[data-field="status"]', row), step.status);
      $('[data-field="attempts"]', row).textContent = String(step.attempts);
      $('[data-field="started_at"]', row).textContent = fmtWhen(step.started_at);
      $('[data-field="duration"]', row).textContent = fmtDuration(stepDuration(step));
      $('[data-field="error"]', row).textContent = step.error || "";
      const cell = $('[data-field="task"]', row);
      if (step.task_id) {
        const link = document.createElement("a");
        link.href = "/tasks/" + encodeURIComponent(step.task_id);
        link.textContent = step.task_id;
        cell.replaceChildren(link);
      }
    }
  }
  function applyFlow(doc) {
    const status = $('[data-flow-field="status"]');
    if (status) setBadge(status, doc.status);
    for (const key of ["updated_at", "ended_at"]) {
      const el = $('[data-flow-field="' + key + '"]');
      if (el) el.textContent = fmtWhen(doc[key]);
    }
    const revision = $('[data-flow-field="revision"]');
    if (revision) revision.textContent = String(doc.revision);
    for (const step of doc.steps || []) applyStep(step);
  }
  async function openStep(node) {
    const panel = $("#step-panel");
    $$("svg.graph .step.selected").forEach((g) => g.classList.remove("selected"));
    node.classList.add("selected");
    panel.hidden = false;
    $("#step-panel-title").textContent = "Step " + node.dataset.stepId;
    const facts = $("#step-panel-facts"), log = $("#step-panel-log"), link = $("#step-panel-link");
    facts.replaceChildren();
    log.textContent = "";
    const taskId = node.dataset.taskId;
    link.hidden = !taskId;
    if (!taskId) { log.textContent = "This step has not started."; return; }
    link.href = "/tasks/" + encodeURIComponent(taskId);
    try {
      const [task, logs] = await Promise.all([
        getJSON("/api/tasks/" + encodeURIComponent(taskId)),
        getJSON("/api/tasks/" + encodeURIComponent(taskId) + "/logs"),
      ]);
      for (const key of ["task_id", "status", "run_id", "started_at", "ended_at", "error", "terminal_summary"]) {
        const div = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = key;
        dd.textContent = key.endsWith("_at") ? fmtWhen(task[key]) : (task[key] === null ? "–" : String(task[key]));
        div.append(dt, dd);
        facts.append(div);
      }
      const text = [logs.stdout, logs.stderr].filter(Boolean).join("\n");
      log.textContent = logs.captured ? (text || "(no output)") : "No captured output for this task.";
    } catch (err) {
      log.textContent = "Could not load the task: " + err.message;
    }
    panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }
  function initFlow(main) {
    const id = main.dataset.flowId;
    for (const node of $$("svg.graph .step")) {
      node.addEventListener("click", () => openStep(node));
      node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openStep(node); } });
    }
    const close = $("#step-panel-close");
    if (close) close.addEventListener("click", () => { $("#step-panel").hidden = true; });
    if (main.dataset.ended === "true") return;
    poll(async () => {
      const doc = await getJSON("/api/flows/" + encodeURIComponent(id));
      applyFlow(doc);
      // ended: the page becomes static; load it once more for the full picture (why it ended, every task)
      if (doc.ended_at) window.location.reload();
      return !doc.ended_at;
    }, 1000);
  }

  // --- the overview: counts follow /api/status -----------------------------------------------------------
  function initOverview() {
    poll(async () => {
      const doc = await getJSON("/api/status");
      for (const el of $$("[data-metric]")) {
        let value = doc;
        for (const part of el.dataset.metric.split(".")) value = value === null || value === undefined ? value : value[part];
        if (value !== undefined && value !== null) el.textContent = String(value);
      }
    }, 5000);
  }

  // --- a task page: status and log tail follow the task while it is active --------------------------------
  function initTask(main) {
    const id = main.dataset.taskId;
    const active = (s) => s === "queued" || s === "running";
    const status = $('[data-task-field="status"]');
    if (!status || !active($(".badge", status).dataset.status)) return;
    poll(async () => {
      const task = await getJSON("/api/tasks/" + encodeURIComponent(id));
      setBadge(status, task.status);
      for (const key of ["ended_at", "last_event_at", "error", "progress_summary", "terminal_summary"]) {
        const el = $('[data-task-field="' + key + '"]');
        if (el) el.textContent = task[key] === null ? "–" : String(task[key]);
      }
      const logs = await getJSON("/api/tasks/" + encodeURIComponent(id) + "/logs");
      const out = $("#log-stdout"), err = $("#log-stderr");
      if (out) out.textContent = logs.stdout;
      if (err) err.textContent = logs.stderr;
      return active(task.status);
    }, 2000);
  }

  // --- actions: a POST with the token the operator typed in (kept for this tab only) ----------------------
  function initActions() {
    const input = $("#token");
    if (input) {
      input.value = sessionStorage.getItem(TOKEN_KEY) || "";
      input.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, input.value.trim()));
      $("#token-form").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem(TOKEN_KEY, input.value.trim()); });
    }
    for (const button of $$("button[data-action]")) {
      button.addEventListener("click", async () => {
        const token = sessionStorage.getItem(TOKEN_KEY) || (input ? input.value.trim() : "");
        if (!token) { toast("Enter the board's token (top right) first.", true); if (input) input.focus(); return; }
        if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
        button.disabled = true;
        try {
          const response = await fetch(button.dataset.action, { method: "POST", headers: { Authorization: "Bearer " + token } });
          const body = await response.json().catch(() => ({}));
          if (response.ok) { toast(body.message || "Done."); setTimeout(() => window.location.reload(), 800); }
          else toast(body.error || response.status + " " + response.statusText, true);
        } catch (err) { toast(err.message, true); }
        finally { button.disabled = false; }
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const main = $("main");
    const page = main ? main.dataset.page : "";
    if (page === "flow") initFlow(main);
    else if (page === "overview") initOverview();
    else if (page === "task") initTask(main);
    initActions();
  });
})();
