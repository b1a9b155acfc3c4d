/* The annotation sets page: each set is a folded <details id="set-N">. A link to a set (the
 * names in the table of sets, or a URL ending in #set-N) opens its section; the browser
 * only scrolls to a closed section, which would leave the set's history hidden. */
(function () {
  "use strict";

  /** Opens the section a fragment ("#set-3") names; returns it, or null. */
  function openSection(hash) {
    let id;
    try {
      id = decodeURIComponent(hash.slice(1));
    } catch (error) {
      return null; // a malformed fragment names no section
    }
    const target = id ? document.getElementById(id) : null;
    if (!(target instanceof HTMLDetailsElement)) return null;
    target.open = true;
    return target;
  }

  // On the click itself, before the browser scrolls: also when the fragment is already the
  // page's (no hashchange then) and the user had folded the section again.
  document.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[href^='#']") : null;
    if (link) openSection(link.getAttribute("href"));
  });
  window.addEventListener("hashchange", () => openSection(location.hash));
  // Opened after load: the browser has already scrolled to the section while it was folded,
  // so scroll again to where it now is.
  const target = location.hash ? openSection(location.hash) : null;
  if (target) target.scrollIntoView();
})();
