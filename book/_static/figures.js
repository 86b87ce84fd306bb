/* Every figure of a page opens full size on tap (book/_static/figures.js, listed in _config.yml).
 *
 * On a phone a figure is scaled down to the column, and its text with it, below what can be read
 * (tests/test_book_browser.py measures it at 400 px). Each image of the article that is not a link
 * already becomes a link to its own PNG, which the browser shows at its natural size. */

document.addEventListener("DOMContentLoaded", () => {
  for (const image of document.querySelectorAll("article.bd-article img")) {
    if (image.closest("a")) {
      continue;
    }
    const link = document.createElement("a");
    link.href = image.getAttribute("src");
    link.className = "figure-full-size";
    link.title = "Open the figure full size";
    image.replaceWith(link);
    link.appendChild(image);
  }
});
