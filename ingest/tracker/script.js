/* Analytics tracker: see docs/tracker.md */
(function (w, d, nav) {
  var tag = d.currentScript, old = w.analytics, loc = w.location, last;
  if (!tag || (old && old.live)) return;
  var attr = function (n) { return tag.getAttribute("data-" + n); };
  var site = attr("site"), api = attr("api") || new URL("/api/event", tag.src).href;
  // Local pages and automated browsers are the owner testing, not traffic.
  var off = attr("allow-local") == null && (nav.webdriver || loc.protocol == "file:" ||
    /^(localhost|127(\.\d+){3}|\[::1\])$/.test(loc.hostname));

  function track(name, opts) {
    if (off) return;
    var props = opts && opts.props, p, k;
    if (props) {
      p = {};
      for (k in props) if (props[k] != null) p[k] = "" + props[k];
    }
    var body = JSON.stringify({ n: name, u: loc.href, d: site, r: d.referrer || null, p: p });
    // text/plain: a "simple" request, no CORS preflight.
    if (!(nav.sendBeacon && nav.sendBeacon(api, new Blob([body], { type: "text/plain" })))) {
      w.fetch && fetch(api, { method: "POST", body: body, keepalive: true,
        headers: { "Content-Type": "text/plain" } })["catch"](function () {});
    }
  }

  // A page view per new URL (fragment aside), not per replaceState that keeps it.
  function page() {
    var url = loc.href.split("#")[0];
    if (url != last) { last = url; track("pageview"); }
  }

  function start() {
    page();
    for (var q = (old && old.q) || [], i = 0; i < q.length; i++) track.apply(w, q[i]);
  }

  ["pushState", "replaceState"].forEach(function (m) {
    var orig = history[m];
    history[m] = function () { var r = orig.apply(this, arguments); page(); return r; };
  });
  w.addEventListener("popstate", page);
  w.analytics = track;
  track.live = 1;
  // A prerendered page counts when shown, if ever.
  if (d.prerendering) d.addEventListener("prerenderingchange", start, { once: true });
  else start();
})(window, document, navigator);
