//! A Prometheus text page (`/metrics`) read into its series: `kopek status`, `kopek bench`,
//! the integration tests and the examples all read the server's metrics through it.

use std::collections::BTreeMap;

/// One scrape: every series (`name{labels}`) and its value. Comment lines and lines whose
/// value is not a number are left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    series: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(page: &str) -> Scrape {
        let series = page
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.trim_end().rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape { series }
    }

    /// The value of one series, written as the page writes it: `name` or `name{labels}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.series.get(series).copied()
    }

    /// The series of family `name`, each with its labels (`{...}`, empty when none).
    pub fn family<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.series.iter().filter_map(move |(series, value)| {
            let labels = series.strip_prefix(name)?;
            (labels.is_empty() || labels.starts_with('{')).then_some((labels, *value))
        })
    }

    /// The sum of the family's series whose labels pass `keep`.
    pub fn sum(&self, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
        self.family(name).filter(|(labels, _)| keep(labels)).map(|(_, value)| value).sum()
    }

    /// The value of a family with one series (the first, in label order, when it has more).
    pub fn one(&self, name: &str) -> Option<f64> {
        self.family(name).next().map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP kopek_transfers_total Transfers.\n\
        # TYPE kopek_transfers_total counter\n\
        kopek_transfers_total{status=\"posted\"} 7\n\
        kopek_transfers_total{status=\"declined\"} 2\n\
        kopek_transfers_total_other 100\n\
        kopek_relay_up 1\n\
        kopek_queue_depth 0.5\n\
        broken line\n";

    #[test]
    fn a_page_reads_into_its_series_and_families() {
        let scrape = Scrape::parse(PAGE);
        assert_eq!(scrape.get("kopek_transfers_total{status=\"posted\"}"), Some(7.0));
        assert_eq!(scrape.get("kopek_relay_up"), Some(1.0));
        assert_eq!(scrape.get("broken"), None, "a value that is no number is left out");
        // A family is its name exactly: `kopek_transfers_total_other` is another family.
        assert_eq!(scrape.sum("kopek_transfers_total", |_| true), 9.0);
        assert_eq!(scrape.sum("kopek_transfers_total", |labels| labels.contains("posted")), 7.0);
        assert_eq!(scrape.one("kopek_queue_depth"), Some(0.5));
        assert_eq!(scrape.one("kopek_transfers_total"), Some(2.0), "declined sorts first");
        assert_eq!(scrape.one("kopek_missing"), None);
    }
}
