//! Ranges of the shared KV cache's rows, one per running sequence: first fit, freed ranges
//! merged with their neighbours.

/// Free row ranges of a cache of `rows` positions.
#[derive(Debug, Clone)]
pub struct Slots {
    /// Sorted, disjoint, none empty: `(start, len)`.
    free: Vec<(usize, usize)>,
}

impl Slots {
    pub fn new(rows: usize) -> Self {
        Slots {
            free: if rows > 0 {
                vec![(0, rows)]
            } else {
                Vec::new()
            },
        }
    }

    /// The first free range of `len` rows, taken (`None`: no range that long is free now).
    pub fn take(&mut self, len: usize) -> Option<usize> {
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, l - len);
        }
        Some(start)
    }

    /// Gives `start..start + len` back.
    pub fn give(&mut self, start: usize, len: usize) {
        if len == 0 {
            return;
        }
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, len));
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free.remove(i + 1).1;
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free.remove(i).1;
        }
    }

    /// Rows free in all.
    #[cfg(test)]
    pub fn free_rows(&self) -> usize {
        self.free.iter().map(|&(_, l)| l).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn ranges_are_taken_first_fit_and_merged_back() {
        let mut slots = Slots::new(10);
        assert_eq!(slots.take(4), Some(0));
        assert_eq!(slots.take(4), Some(4));
        assert_eq!(slots.take(4), None);
        slots.give(0, 4);
        assert_eq!(slots.take(3), Some(0));
        slots.give(4, 4);
        slots.give(0, 3);
        assert_eq!(slots.free_rows(), 10);
        assert_eq!(slots.take(10), Some(0));
    }
}
