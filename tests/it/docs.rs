//! The README and the pages under `docs/`, as a reader meets them: every relative link points to
//! a file of the repository and every `#anchor` to a heading of its page; every page of `docs/`
//! is linked from the README; the README stays a ten-minute read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::helpers::repo;

/// The README's word budget (issue 19): what `wc -w README.md` counts.
const README_MAX_WORDS: usize = 2500;

/// The Markdown files a reader opens: the README, the changelog and every page of `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo("README.md"), repo("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of `text` outside fenced code blocks.
fn outside_fences(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            let fence = line.trim_start().starts_with("```");
            fenced ^= fence;
            !fenced && !fence
        })
        .collect()
}

/// The lines of `text` outside fenced code blocks, with inline code spans removed.
fn prose(text: &str) -> Vec<String> {
    outside_fences(text)
        .into_iter()
        // Odd pieces are inside backticks.
        .map(|line| line.split('`').step_by(2).collect::<Vec<_>>().join(""))
        .collect()
}

/// The targets of the inline links and images of `text`: `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (code spans keep their text in a heading).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in outside_fences(text) {
        if let Some(heading) = line.strip_prefix('#') {
            let heading = heading.trim_start_matches('#');
            let mut anchor = slug(heading);
            let mut n = 1;
            while out.contains(&anchor) {
                anchor = format!("{}-{n}", slug(heading));
                n += 1;
            }
            out.insert(anchor);
        }
    }
    out
}

#[test]
fn every_relative_link_of_the_readme_and_the_docs_points_to_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
            {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            let shown = format!(
                "{} → {link}",
                page.strip_prefix(repo("")).unwrap().display()
            );
            if !target.exists() {
                broken.push(format!("{shown}: no such file"));
            } else if !anchor.is_empty() {
                let text = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{shown}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_links_every_page_of_the_docs_and_stays_under_its_word_budget() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let linked: BTreeSet<PathBuf> = links(&readme)
        .iter()
        .map(|l| Path::new(l.split('#').next().unwrap()).to_path_buf())
        .collect();
    for page in pages().iter().skip(2) {
        let relative = page.strip_prefix(repo("")).unwrap();
        assert!(
            linked.contains(relative),
            "the README links {}",
            relative.display()
        );
    }
    for file in ["LICENSE", "CHANGELOG.md"] {
        assert!(linked.contains(Path::new(file)), "the README links {file}");
    }
    let words = readme.split_whitespace().count();
    assert!(
        words <= README_MAX_WORDS,
        "the README has {words} words, more than {README_MAX_WORDS}: move the detail to docs/"
    );
}

#[test]
fn anchors_follow_githubs_rules() {
    assert_eq!(
        slug(" Rejects: what to do about them"),
        "rejects-what-to-do-about-them"
    );
    assert_eq!(slug(" Durability's cost"), "durabilitys-cost");
    assert_eq!(slug(" `szb-sync` and 3.0 (beta)"), "szb-sync-and-30-beta");
    let text = "# A\n```\n# not a heading\n```\n## A\n";
    assert_eq!(
        anchors(text),
        ["a".to_owned(), "a-1".to_owned()].into_iter().collect()
    );
    assert_eq!(
        links("[x](a.md#b) `[not](c.md)` ![img](d.png)\n```\n[no](e.md)\n```"),
        ["a.md#b", "d.png"]
    );
}
