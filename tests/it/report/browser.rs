//! A real headless browser for the report: Debian's `chromium` prints the HTML to PDF
//! (with a net log of everything it fetched), and `pdftotext` reads back the text a
//! reader sees. `scripts/setup` installs both.
//!
//! Chromium's own background services (component updater, sign-in) try to reach Google
//! even with every `--disable-*` flag; a proxy on a closed loopback port and a resolver
//! that resolves nothing keep every request on this machine, and the net log shows
//! each attempt, so the page's own fetches can be told apart (they are made for a
//! `file://` page).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Chromium prints a page of a few hundred KiB in 2 to 5 s here; a minute is far
/// beyond that, and a hung browser must fail the test, not hang it.
const BROWSER_TIMEOUT_SECS: &str = "120";

/// What the browser made of a report.
pub struct Rendered {
    /// All the text of the PDF (as `pdftotext` reads it).
    pub text: String,
    /// The text of page 1.
    pub first_page: String,
    pub pages: usize,
    /// URLs the page itself asked for (images, styles, scripts, frames): must be none.
    pub page_fetches: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Rendered {
    /// The text with all whitespace removed (the PDF breaks lines anywhere).
    pub fn squeezed(&self) -> String {
        squeeze(&self.text)
    }
}

pub fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} exited {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Prints `html` (a file) to PDF in headless chromium and reads the PDF back. With
/// `CLEANROOM_REPORT_KEEP=<dir>` the HTML and the PDF are also copied there as
/// `<name>.html` and `<name>.pdf`, for a person to look at.
pub fn render(html: &Path, name: &str) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("report.pdf");
    let netlog = dir.path().join("net.json");
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    run(Command::new("timeout").arg(BROWSER_TIMEOUT_SECS).arg("chromium").args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-pdf-header-footer",
        // Nothing leaves the machine: every request goes to a closed loopback port,
        // and no name resolves.
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        &format!("--user-data-dir={}", dir.path().join("profile").display()),
        &format!("--log-net-log={}", netlog.display()),
        &format!("--print-to-pdf={}", pdf.display()),
        &url,
    ]));
    assert!(pdf.exists(), "chromium wrote no PDF for {url}");
    let text = String::from_utf8(run(Command::new("pdftotext").arg(&pdf).arg("-")).stdout).unwrap();
    let first_page = String::from_utf8(
        run(Command::new("pdftotext").args(["-f", "1", "-l", "1"]).arg(&pdf).arg("-")).stdout,
    )
    .unwrap();
    let info = String::from_utf8(run(Command::new("pdfinfo").arg(&pdf)).stdout).unwrap();
    let pages = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("pdfinfo names the page count");
    let page_fetches = fetches_of_the_page(&netlog, &url);
    if let Some(keep) = std::env::var_os("CLEANROOM_REPORT_KEEP") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(html, keep.join(format!("{name}.html"))).unwrap();
        std::fs::copy(&pdf, keep.join(format!("{name}.pdf"))).unwrap();
    }
    Rendered { text, first_page, pages, page_fetches, _dir: dir }
}

/// URLs requested on behalf of the `file://` page (its network isolation key is the
/// file origin), other than the page itself. Chromium's background requests carry
/// other keys.
fn fetches_of_the_page(netlog: &Path, page: &str) -> Vec<String> {
    let text = std::fs::read_to_string(netlog).expect("chromium wrote its net log");
    // A log cut short by the exit lacks its closing brackets.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .expect("the net log is JSON");
    let mut out: Vec<String> = log["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let p = e.get("params")?;
            let url = p.get("url")?.as_str()?;
            let key = p.get("network_isolation_key")?.as_str()?;
            (key.contains("file://") && url != page).then(|| url.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Tags and attributes the report's HTML is made of. Every value is entity-escaped,
/// so any other tag or attribute in the file came from data.
const TAGS: &[&str] = &[
    "html", "head", "meta", "title", "style", "body", "header", "section", "h1", "h2", "h3", "h4", "p",
    "span", "div", "table", "thead", "tbody", "tr", "th", "td", "ul", "ol", "li", "pre", "a", "b", "br",
];
const ATTRIBUTES: &[&str] = &["class", "id", "href", "lang", "charset", "http-equiv", "content", "name"];

/// Checks that `html` holds only the report's own tags and attributes, links only
/// inside itself, and a stylesheet that loads nothing.
pub fn only_our_markup(html: &str) -> Result<(), String> {
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>').ok_or("a tag is not closed")?;
        let tag = &after[..end];
        rest = &after[end + 1..];
        if tag.starts_with('!') {
            if !tag.eq_ignore_ascii_case("!DOCTYPE html") {
                return Err(format!("unexpected declaration <{tag}>"));
            }
            continue;
        }
        let body = tag.trim_start_matches('/');
        let name: String = body.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !TAGS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("tag <{tag}> is not one the report writes"));
        }
        if name == "style" && !tag.starts_with('/') {
            let close = rest.find("</style>").ok_or("style not closed")?;
            let css = &rest[..close].to_ascii_lowercase();
            if css.contains("url(") || css.contains("@import") || css.contains("@font-face") {
                return Err("the stylesheet loads something".into());
            }
            rest = &rest[close..];
        }
        // Attributes: name="value" pairs (values never hold a quote: they are escaped).
        let mut attrs = body[name.len()..].trim();
        while !attrs.is_empty() {
            let (attr, tail) =
                attrs.split_once('=').ok_or_else(|| format!("attribute without value in <{tag}>"))?;
            let attr = attr.trim();
            if !ATTRIBUTES.contains(&attr) {
                return Err(format!("attribute {attr} in <{tag}>"));
            }
            let tail =
                tail.trim_start().strip_prefix('"').ok_or_else(|| format!("unquoted value in <{tag}>"))?;
            let (value, more) = tail.split_once('"').ok_or_else(|| format!("unclosed value in <{tag}>"))?;
            if attr == "href" && !value.starts_with('#') {
                return Err(format!("link out of the document: <{tag}>"));
            }
            attrs = more.trim();
        }
    }
    Ok(())
}

#[test]
fn the_markup_check_finds_injected_tags_attributes_and_links() {
    assert!(
        only_our_markup("<!DOCTYPE html><p class=\"a\">x &lt;script&gt;</p><a href=\"#e1\">E1</a>").is_ok()
    );
    for bad in [
        "<p>x<script>alert(1)</script></p>",
        "<p>x<img src=\"x\"></p>",
        "<p onclick=\"x\">y</p>",
        "<a href=\"http://203.0.113.66/\">x</a>",
        "<style>p{background:url(http://x/)}</style>",
    ] {
        assert!(only_our_markup(bad).is_err(), "{bad}");
    }
}

/// The Markdown outside code blocks (indented or fenced): where a renderer would
/// act on raw markup. Inside code blocks every renderer shows text as it is.
pub fn markdown_outside_code(md: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced && !line.starts_with("    ") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
