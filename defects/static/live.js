// The live section of the upload page: polls the figures once a second and reloads the
// video after a broken connection (server restarted). URLs come from the page
// (data-stats / data-feed on #feed); textContent only: nothing from the JSON becomes HTML.
(function () {
  var feed = document.getElementById('feed');
  if (!feed) return;
  var statsUrl = feed.getAttribute('data-stats');
  var feedUrl = feed.getAttribute('data-feed');
  function put(id, text) { var e = document.getElementById(id); if (e) e.textContent = text; }
  function ms(v) { return v === null || v === undefined ? '-' : v.toFixed(1) + ' ms'; }
  function counts(o) {
    var k = Object.keys(o || {}).sort();
    return k.length ? k.map(function (n) { return n + ': ' + o[n]; }).join(', ') : 'none';
  }
  function down(text) {
    var st = document.getElementById('status');
    st.textContent = text; st.className = 'state down';
  }
  function poll() {
    fetch(statsUrl, { cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (s) {
      var st = document.getElementById('status');
      st.textContent = s.status + (s.reason && s.state !== 'live' ? ' \u2014 ' + s.reason : '');
      st.className = 'state' + (s.state === 'live' ? '' : ' down');
      put('fps-model', s.fps.model.toFixed(1)); put('fps-published', s.fps.published.toFixed(1));
      put('latency', ms(s.latency_ms.p50) + ' / ' + ms(s.latency_ms.p95));
      put('model-ms', ms(s.model_ms.p50) + ' / ' + ms(s.model_ms.p95));
      put('frames', s.frames.read + ' / ' + s.frames.dropped + ' / ' + s.frames.garbage);
      put('errors', String(s.frames.errors)); put('viewers', String(s.viewers));
      put('last', counts(s.detections.last_frame)); put('total', counts(s.detections.total));
    }).catch(function () { down('server unreachable'); });
  }
  feed.onerror = function () {
    setTimeout(function () { feed.src = feedUrl + '?t=' + Date.now(); }, 2000);
  };
  poll(); setInterval(poll, 1000);
})();
