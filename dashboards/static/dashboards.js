/* nero-study dashboards: draw the figures embedded in the page, and keep a live page up to date.
 *
 * A page embeds its figures as JSON in <script type="application/json" id="page-figures"> ({id: {data, layout}});
 * each is drawn into the element with id "figure-<id>". A live page (a running sweep or trial) also embeds
 * <script type="application/json" id="page-live"> ({url, version, finished, interval_ms, etag}): every interval
 * this script asks url with If-None-Match: <etag> (the validator of what the page shows; a page without one asks
 * url?version=<version>). 304 means nothing changed; otherwise it keeps the answer's ETag, redraws the figures
 * with Plotly.react and replaces the HTML of the fragments it names (no reload), and it stops polling once the
 * answer says finished.
 */
(function () {
  "use strict";

  var PLOT_CONFIG = { responsive: true, displaylogo: false };
  var MAX_BACKOFF_MS = 30000;

  function readJSON(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function drawFigures(figures, update) {
    Object.keys(figures || {}).forEach(function (id) {
      var target = document.getElementById("figure-" + id);
      if (!target) {
        return;
      }
      var figure = figures[id];
      var draw = update && target.classList.contains("js-plotly-plot") ? Plotly.react : Plotly.newPlot;
      draw(target, figure.data, figure.layout, PLOT_CONFIG);
    });
  }

  function replaceFragments(fragments) {
    Object.keys(fragments || {}).forEach(function (id) {
      var target = document.getElementById(id);
      if (target) {
        target.innerHTML = fragments[id];
      }
    });
  }

  function setLiveState(text, state) {
    var badge = document.getElementById("live-state");
    if (badge) {
      badge.textContent = text;
      badge.dataset.state = state;
    }
  }

  function startPolling(live) {
    var version = live.version;
    var etag = live.etag || null;
    var delay = live.interval_ms;
    var updates = 0;

    function schedule(ms) {
      document.body.dataset.nextPoll = String(ms); // what is scheduled, for readers and tests
      window.setTimeout(poll, ms);
    }

    function poll() {
      var url = live.url;
      var headers = { Accept: "application/json" };
      if (etag) {
        headers["If-None-Match"] = etag; // set by hand, so a 304 reaches this script
      } else {
        url += (url.indexOf("?") === -1 ? "?" : "&") + "version=" + encodeURIComponent(version);
      }
      fetch(url, { headers: headers, cache: "no-store" })
        .then(function (response) {
          if (response.status === 304) {
            return { changed: false, finished: false }; // what the page shows is current (and not finished)
          }
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          if (etag) {
            etag = response.headers.get("ETag") || etag;
          }
          return response.json();
        })
        .then(function (answer) {
          delete document.body.dataset.nextPoll; // this poll has run; the next one is set below, if any
          delay = live.interval_ms;
          if (answer.changed) {
            version = answer.version;
            drawFigures(answer.figures, true);
            replaceFragments(answer.fragments);
            updates += 1;
            document.body.dataset.liveUpdates = String(updates);
          }
          if (answer.finished) {
            document.body.dataset.nextPoll = "none";
            setLiveState("finished: live updates stopped", "stopped");
            return;
          }
          setLiveState("live: updates every " + Math.round(live.interval_ms / 100) / 10 + " s", "live");
          schedule(delay);
        })
        .catch(function (error) {
          // The server may be restarting: try again later, more slowly (a warning, not an error).
          delay = Math.min(MAX_BACKOFF_MS, delay * 2);
          setLiveState("live: server not reachable, retrying", "retrying");
          console.warn("nero-study: live update failed: " + error);
          schedule(delay);
        });
    }

    setLiveState("live: updates every " + Math.round(live.interval_ms / 100) / 10 + " s", "live");
    schedule(delay);
  }

  function main() {
    drawFigures(readJSON("page-figures"), false);
    var live = readJSON("page-live");
    if (live && !live.finished && window.fetch) {
      startPolling(live);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", main);
  } else {
    main();
  }
})();
