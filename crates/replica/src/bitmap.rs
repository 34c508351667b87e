//! The dirty-block bitmap: one bit per `granularity` bytes of the volume; a set bit means the block
//! may differ on the peer and must be resynced.

/// A dirty-block bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    bits: u64,
    size: u64,
    granularity: u32,
    set: u64,
}

impl Bitmap {
    /// A clean bitmap covering `size` bytes with one bit per `granularity` bytes (a power of two ≥ 512).
    pub fn new(size: u64, granularity: u32) -> Self {
        let granularity = granularity.max(512).next_power_of_two();
        let bits = size.div_ceil(granularity as u64);
        Bitmap {
            words: vec![0; bits.div_ceil(64) as usize],
            bits,
            size,
            granularity,
            set: 0,
        }
    }

    /// Rebuilds from stored words (extra bits beyond `bits` are cleared).
    pub fn from_words(size: u64, granularity: u32, mut words: Vec<u64>) -> Self {
        let mut b = Bitmap::new(size, granularity);
        words.resize(b.words.len(), 0);
        if !b.bits.is_multiple_of(64) {
            if let Some(last) = words.last_mut() {
                *last &= (1u64 << (b.bits % 64)) - 1;
            }
        }
        b.set = words.iter().map(|w| w.count_ones() as u64).sum();
        b.words = words;
        b
    }

    /// Bytes per bit.
    pub fn granularity(&self) -> u32 {
        self.granularity
    }

    /// Number of bits.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.set
    }

    /// Bytes marked out of sync (the last block may be partial; counted whole).
    pub fn dirty_bytes(&self) -> u64 {
        self.set * self.granularity as u64
    }

    /// The raw words (for metadata and for sending to the peer).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn range_bits(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        if len == 0 || offset >= self.bits * self.granularity as u64 {
            return None;
        }
        let g = self.granularity as u64;
        let first = offset / g;
        let last = (offset.saturating_add(len) - 1) / g;
        Some((first, last.min(self.bits - 1)))
    }

    /// Marks every block touching `[offset, offset+len)` dirty; returns how many bits changed.
    pub fn set_range(&mut self, offset: u64, len: u64) -> u64 {
        let Some((a, b)) = self.range_bits(offset, len) else {
            return 0;
        };
        let mut n = 0;
        for bit in a..=b {
            n += self.set_bit(bit) as u64;
        }
        n
    }

    /// Clears blocks lying entirely inside `[offset, offset+len)`; returns how many bits changed.
    pub fn clear_range(&mut self, offset: u64, len: u64) -> u64 {
        let g = self.granularity as u64;
        let first = offset.div_ceil(g);
        let end = offset.saturating_add(len);
        // The last block may be partial: clearing up to the end of the volume clears it.
        let last_excl = if end >= self.size { self.bits } else { end / g };
        let mut n = 0;
        for bit in first..last_excl {
            n += self.clear_bit(bit) as u64;
        }
        n
    }

    /// Sets every bit (full sync).
    pub fn set_all(&mut self) {
        for bit in 0..self.bits {
            self.set_bit(bit);
        }
    }

    /// Clears every bit.
    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.set = 0;
    }

    /// ORs another bitmap of the same shape into this one (words beyond ours are ignored).
    pub fn merge_words(&mut self, start_word: usize, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            let Some(idx) = start_word.checked_add(i) else {
                return;
            };
            if idx >= self.words.len() {
                return;
            }
            let mut w = *w;
            if idx == self.words.len() - 1 && !self.bits.is_multiple_of(64) {
                w &= (1u64 << (self.bits % 64)) - 1;
            }
            let before = self.words[idx].count_ones();
            self.words[idx] |= w;
            self.set += (self.words[idx].count_ones() - before) as u64;
        }
    }

    /// True if bit `bit` is set.
    pub fn test(&self, bit: u64) -> bool {
        bit < self.bits && self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// True if any block touching the range is dirty.
    pub fn any_in(&self, offset: u64, len: u64) -> bool {
        self.range_bits(offset, len)
            .is_some_and(|(a, b)| (a..=b).any(|bit| self.test(bit)))
    }

    /// First set bit at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let mut bit = from;
        while bit < self.bits {
            let wi = (bit / 64) as usize;
            let w = self.words[wi] >> (bit % 64);
            if w != 0 {
                let b = bit + w.trailing_zeros() as u64;
                return (b < self.bits).then_some(b);
            }
            bit = (wi as u64 + 1) * 64;
        }
        None
    }

    fn set_bit(&mut self, bit: u64) -> bool {
        let (w, m) = ((bit / 64) as usize, 1u64 << (bit % 64));
        let was = self.words[w] & m != 0;
        self.words[w] |= m;
        if !was {
            self.set += 1;
        }
        !was
    }

    fn clear_bit(&mut self, bit: u64) -> bool {
        let (w, m) = ((bit / 64) as usize, 1u64 << (bit % 64));
        let was = self.words[w] & m != 0;
        self.words[w] &= !m;
        if was {
            self.set -= 1;
        }
        was
    }
}
