// genfleet ui: live updates by server-sent events. The server sends HTML it rendered
// (and escaped); this script only puts it in place. No build step, no dependencies.
"use strict";

function follow(target) {
  const source = new EventSource(target.dataset.events);
  source.addEventListener("update", (event) => {
    // Keep open <details> (raw answers, spec) open across updates.
    const open = new Set(
      Array.from(target.querySelectorAll("details[open]"), (d) => d.closest("[data-step-id]")?.dataset.stepId)
    );
    target.innerHTML = event.data;
    target.querySelectorAll("details").forEach((d) => {
      if (open.has(d.closest("[data-step-id]")?.dataset.stepId)) d.open = true;
    });
    showAges();
    target.dataset.updates = String(Number(target.dataset.updates || 0) + 1);
  });
  source.addEventListener("end", () => source.close());
  return source;
}

function age(seconds) {
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

// Times come as UTC text with data-ts; shown as ages, kept fresh here (not by the
// server, so a finished job's HTML never changes).
function showAges() {
  const now = Date.now() / 1000;
  document.querySelectorAll("time.ago[data-ts]").forEach((t) => {
    if (!t.title) t.title = t.textContent;
    t.textContent = `${age(Math.max(0, now - Number(t.dataset.ts)))} ago`;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  showAges();
  setInterval(showAges, 1000);
  document.querySelectorAll("[data-events]").forEach(follow);
  const filters = document.getElementById("filters");
  if (filters) {
    // Changing a filter reloads the list with it (the stream follows the new filter).
    filters.querySelectorAll("select").forEach((s) => s.addEventListener("change", () => filters.submit()));
  }
});
