// Live updates of the site page: the server sends the page's main part again when it changed
// (server-sent events, at most once per `site_page.update_s`); the browser reconnects by itself.
"use strict";
(function () {
  const key = document.body.dataset.live;
  const badge = document.getElementById("live-state");
  const main = document.getElementById("live");
  function show(text, css) {
    if (badge) { badge.textContent = text; badge.className = "live-state " + css; }
  }
  if (!key || !window.EventSource || !main) { show("static", ""); return; }
  const source = new EventSource("/live?page=" + encodeURIComponent(key));
  source.onopen = function () { show("live", "on"); };
  source.onerror = function () { show("reconnecting", "off"); };
  source.onmessage = function (event) {
    const update = JSON.parse(event.data);
    if (typeof update.html === "string") {
      main.innerHTML = update.html;
      document.body.dataset.updated = String(Date.now());
      show("live", "on");
    } else if (update.gone) {
      source.close();
      show("page gone", "off");
    }
  };
})();
