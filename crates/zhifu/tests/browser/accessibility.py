"""The accessibility check the browser tests run on every page they keep a
screenshot of (a JavaScript function for Playwright's `page.evaluate`)."""

# WCAG 2 contrast of every text element against its nearest opaque
# background, and every form control's accessible label.
ACCESSIBILITY = """() => {
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; })
    .reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
  const problems = [];
  for (const el of document.querySelectorAll('h1,h2,p,label,legend,button,a,span,td,th,dt,dd')) {
    if (!el.textContent.trim()) continue;
    const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) problems.push(el.tagName + ' "' + el.textContent.trim().slice(0, 20) + '" ' + ratio.toFixed(2));
  }
  for (const input of document.querySelectorAll('input:not([type=hidden]),select')) {
    if ((!input.labels || input.labels.length === 0) && !input.getAttribute('aria-label')) problems.push('unlabelled ' + input.name);
  }
  if (!document.documentElement.lang) problems.push('no lang');
  return problems;
}"""


