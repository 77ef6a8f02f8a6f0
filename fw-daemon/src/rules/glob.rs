//! Shell-style globs for container names, images and label values: `*` is any run of
//! characters, `?` any one character, everything else is literal. Small on purpose: the
//! overlap warning needs to decide whether two globs can match a common string, which is easy
//! for this grammar and hard for regexes.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Glob {
    text: String,
    toks: Vec<Tok>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

impl Glob {
    pub fn new(text: &str) -> Glob {
        let mut toks = Vec::with_capacity(text.len());
        for c in text.chars() {
            let t = match c {
                '*' => Tok::Star,
                '?' => Tok::Any,
                c => Tok::Lit(c),
            };
            // `**` means the same as `*`; collapsing keeps matching linear.
            if !(t == Tok::Star && toks.last() == Some(&Tok::Star)) {
                toks.push(t);
            }
        }
        Glob { text: text.to_string(), toks }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Iterative matcher with single-star backtracking: O(len(p) * len(s)) worst case.
    pub fn matches(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        let p = &self.toks;
        let (mut pi, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(Tok::Star) => {
                    star = Some((pi, si));
                    pi += 1;
                }
                Some(Tok::Any) => {
                    pi += 1;
                    si += 1;
                }
                Some(Tok::Lit(c)) if *c == s[si] => {
                    pi += 1;
                    si += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        pi = sp + 1;
                        si = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|t| *t == Tok::Star)
    }

    /// Whether some string matches both globs. Dynamic programming over pairs of positions:
    /// `reach[i][j]` means some common prefix leaves self at token i and other at token j.
    pub fn intersects(&self, other: &Glob) -> bool {
        let (a, b) = (&self.toks, &other.toks);
        let w = b.len() + 1;
        let mut reach = vec![false; (a.len() + 1) * w];
        reach[0] = true;
        for i in 0..=a.len() {
            for j in 0..=b.len() {
                if !reach[i * w + j] {
                    continue;
                }
                let ta = a.get(i);
                let tb = b.get(j);
                // A star may match nothing.
                if ta == Some(&Tok::Star) {
                    reach[(i + 1) * w + j] = true;
                }
                if tb == Some(&Tok::Star) {
                    reach[i * w + j + 1] = true;
                }
                // Or both consume one common character (a star stays where it is).
                if let (Some(x), Some(y)) = (ta, tb) {
                    let ok = match (x, y) {
                        (Tok::Lit(c), Tok::Lit(d)) => c == d,
                        _ => true,
                    };
                    let ni = if *x == Tok::Star { i } else { i + 1 };
                    let nj = if *y == Tok::Star { j } else { j + 1 };
                    if ok && (ni, nj) != (i, j) {
                        reach[ni * w + nj] = true;
                    }
                }
            }
        }
        reach[a.len() * w + b.len()]
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_stars_and_questions() {
        let g = Glob::new("web-*");
        assert!(g.matches("web-1"));
        assert!(g.matches("web-"));
        assert!(!g.matches("api-1"));
        assert!(Glob::new("db-?").matches("db-2"));
        assert!(!Glob::new("db-?").matches("db-10"));
        assert!(Glob::new("*a*b*").matches("xxaxxbxx"));
        assert!(!Glob::new("*a*b").matches("xxbxxa"));
        assert!(Glob::new("*").matches(""));
    }

    #[test]
    fn intersection_of_globs() {
        assert!(Glob::new("web-*").intersects(&Glob::new("*-1")));
        assert!(!Glob::new("web-*").intersects(&Glob::new("db-*")));
        assert!(Glob::new("a?c").intersects(&Glob::new("*c")));
        assert!(!Glob::new("a?c").intersects(&Glob::new("abcd")));
        assert!(Glob::new("*x*").intersects(&Glob::new("*y*")));
        assert!(!Glob::new("ab").intersects(&Glob::new("a")));
    }

    fn glob_strategy() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab*?]{0,5}").unwrap()
    }

    proptest! {
        // intersects() must equal "some string matches both": brute force over {a,b} strings
        // up to the sum of the pattern lengths (enough: a shortest common string is no longer,
        // and a `?` never needs a letter outside the patterns' alphabet).
        #[test]
        fn intersects_agrees_with_brute_force(p in glob_strategy(), q in glob_strategy()) {
            let (gp, gq) = (Glob::new(&p), Glob::new(&q));
            prop_assert_eq!(gp.intersects(&gq), gq.intersects(&gp));
            let mut witness = false;
            'outer: for len in 0..=(p.len() + q.len()) {
                for n in 0..(1u32 << len) {
                    let s: String = (0..len).map(|i| if n >> i & 1 == 1 { 'a' } else { 'b' }).collect();
                    if gp.matches(&s) && gq.matches(&s) { witness = true; break 'outer; }
                }
            }
            prop_assert_eq!(gp.intersects(&gq), witness, "{} vs {}", p, q);
        }
    }
}
