// modelcast dashboard: live updates without a reload. The page asks its own address again with
// the header X-Live: TOKEN (what its live region was made from); the server answers once a newer
// snapshot exists or a banner changed (else, after one interval, 204), and the fragment replaces
// the page's #live region. If the dashboard
// cannot be reached, the page keeps what it shows under a banner and retries with backoff.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live) {
    return;
  }
  let generation = live.dataset.gen || "0";
  let failures = 0;

  function unreachable(why) {
    let note = document.getElementById("unreachable");
    if (why && !note) {
      note = document.createElement("div");
      note.id = "unreachable";
      note.className = "banner";
      note.setAttribute("role", "alert");
      live.parentNode.insertBefore(note, live);
    }
    if (why) {
      note.textContent = why + ": this page shows what it last received, and retries.";
    } else if (note) {
      note.remove();
    }
  }

  async function poll() {
    try {
      const reply = await fetch(location.pathname + location.search, {
        headers: { "X-Live": generation },
        cache: "no-store",
        credentials: "same-origin",
      });
      if (reply.status === 200) {
        const fragment = await reply.text();
        live.innerHTML = fragment;
        generation = reply.headers.get("X-Live-Generation") || generation;
        live.dataset.gen = generation;
      } else if (reply.status !== 204) {
        throw new Error(reply.status === 401
          ? "The dashboard needs its token again (open it with ?token=TOKEN)"
          : "The dashboard answered HTTP " + reply.status);
      }
      failures = 0;
      unreachable(null);
    } catch (error) {
      failures += 1;
      if (failures >= 2) {
        unreachable(error instanceof TypeError ? "The dashboard cannot be reached" : error.message);
      }
    }
    setTimeout(poll, failures ? Math.min(30000, 500 * 2 ** failures) : 50);
  }

  setTimeout(poll, 50);
})();
