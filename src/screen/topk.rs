//! Hits, the ranking rule, the per-query bounded heap, and the k-way merge of partial top-k
//! lists (what the MPI screen uses to combine ranks).
//!
//! The ranking rule, everywhere in the screen: similarity descending; equal similarities
//! (IEEE equality, so -0.0 == 0.0) are ordered by candidate id ascending, comparing the ids'
//! UTF-8 bytes lexicographically (Rust's `str` ordering: "mp-10" < "mp-9"). Because this is a
//! total order on (similarity, id) pairs and ids are unique, the top-k of any candidate set is a
//! single well-defined list, whatever the block sizes or the partition into ranks.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One candidate in a query's result list.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub candidate_id: String,
    pub similarity: f32,
}

/// The ranking rule: `Less` means (a_sim, a_id) ranks before (b_sim, b_id).
#[inline]
pub fn rank_order(a_sim: f32, a_id: &str, b_sim: f32, b_id: &str) -> Ordering {
    match b_sim.partial_cmp(&a_sim) {
        Some(Ordering::Equal) | None => a_id.cmp(b_id),
        Some(o) => o,
    }
}

/// `rank_order` on hits.
pub fn hit_order(a: &Hit, b: &Hit) -> Ordering {
    rank_order(a.similarity, &a.candidate_id, b.similarity, &b.candidate_id)
}

/// Heap entry ordered so that the heap's maximum is the worst-ranked hit kept.
#[derive(Debug)]
struct WorstFirst(Hit);

impl PartialEq for WorstFirst {
    fn eq(&self, other: &Self) -> bool {
        hit_order(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for WorstFirst {}
impl PartialOrd for WorstFirst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WorstFirst {
    fn cmp(&self, other: &Self) -> Ordering {
        hit_order(&self.0, &other.0)
    }
}

/// The best `k` hits seen so far for one query (a bounded max-heap keyed on "worst").
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<WorstFirst>,
}

impl TopK {
    /// `k` may exceed the number of candidates (then every candidate is kept). The heap grows on
    /// demand, so a huge `k` costs nothing up front.
    pub fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::new() }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// A similarity below this cannot enter; equal to it can only enter by winning the id
    /// tie-break. `-inf` while the heap is not yet full.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.similarity)
        }
    }

    /// Offer a candidate; returns whether it was kept.
    #[inline]
    pub fn offer(&mut self, similarity: f32, candidate_id: &str) -> bool {
        if self.k == 0 {
            return false;
        }
        if self.heap.len() < self.k {
            self.heap.push(WorstFirst(Hit { candidate_id: candidate_id.to_owned(), similarity }));
            return true;
        }
        let mut worst = self.heap.peek_mut().expect("k > 0 and heap full");
        if rank_order(similarity, candidate_id, worst.0.similarity, &worst.0.candidate_id) == Ordering::Less {
            // Reuse the evicted id's allocation; PeekMut restores the heap on drop.
            worst.0.candidate_id.clear();
            worst.0.candidate_id.push_str(candidate_id);
            worst.0.similarity = similarity;
            true
        } else {
            false
        }
    }

    /// The kept hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        self.heap.into_sorted_vec().into_iter().map(|w| w.0).collect()
    }
}

/// Combine partial results: `parts[p][q]` is the sorted top-k list of query `q` over candidate
/// partition `p` (partitions disjoint). Returns, per query, the top-k of the union — a k-way
/// merge with the same ranking rule, so for any partition of the candidates the answer equals
/// the single-process one.
pub fn merge_topk(parts: Vec<Vec<Vec<Hit>>>, k: usize) -> anyhow::Result<Vec<Vec<Hit>>> {
    let Some(n_queries) = parts.first().map(|p| p.len()) else {
        return Ok(Vec::new());
    };
    for (p, part) in parts.iter().enumerate() {
        anyhow::ensure!(
            part.len() == n_queries,
            "merge_topk: partition {p} has results for {} queries, partition 0 for {n_queries}",
            part.len()
        );
    }
    // Transpose to per-query lists of per-partition iterators.
    let mut per_query: Vec<Vec<std::vec::IntoIter<Hit>>> = (0..n_queries).map(|_| Vec::new()).collect();
    for part in parts {
        for (q, hits) in part.into_iter().enumerate() {
            per_query[q].push(hits.into_iter());
        }
    }
    Ok(per_query.into_iter().map(|lists| merge_sorted_lists(lists, k)).collect())
}

/// Heap entry for the k-way merge: the next hit of list `list`, min-first by rank.
struct MergeHead {
    hit: Hit,
    list: usize,
}
impl PartialEq for MergeHead {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for MergeHead {}
impl PartialOrd for MergeHead {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MergeHead {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed so BinaryHeap (a max-heap) pops the best hit; list index breaks exact
        // duplicates deterministically.
        hit_order(&other.hit, &self.hit).then(other.list.cmp(&self.list))
    }
}

fn merge_sorted_lists(mut lists: Vec<std::vec::IntoIter<Hit>>, k: usize) -> Vec<Hit> {
    let mut heads = BinaryHeap::with_capacity(lists.len());
    for (list, it) in lists.iter_mut().enumerate() {
        if let Some(hit) = it.next() {
            heads.push(MergeHead { hit, list });
        }
    }
    let mut out = Vec::new();
    while out.len() < k {
        let Some(MergeHead { hit, list }) = heads.pop() else { break };
        out.push(hit);
        if let Some(next) = lists[list].next() {
            heads.push(MergeHead { hit: next, list });
        }
    }
    out
}

/// Serialise per-query hit lists to bytes (for shipping a rank's partial results to rank 0):
/// little-endian u64 query count; per query a u64 hit count; per hit the similarity's f32 bits
/// (u32), the id's byte length (u32) and its UTF-8 bytes. Bit-exact, so a merge of decoded
/// parts equals a merge of the originals.
pub fn encode_hits(lists: &[Vec<Hit>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(lists.len() as u64).to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u64).to_le_bytes());
        for h in list {
            out.extend_from_slice(&h.similarity.to_bits().to_le_bytes());
            out.extend_from_slice(&(h.candidate_id.len() as u32).to_le_bytes());
            out.extend_from_slice(h.candidate_id.as_bytes());
        }
    }
    out
}

/// Inverse of [`encode_hits`]; a truncated or malformed buffer is an error, never a panic.
pub fn decode_hits(bytes: &[u8]) -> anyhow::Result<Vec<Vec<Hit>>> {
    struct Cursor<'a>(&'a [u8], usize);
    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
            anyhow::ensure!(self.0.len() - self.1 >= n, "hit buffer truncated at byte {} (need {n} more)", self.1);
            self.1 += n;
            Ok(&self.0[self.1 - n..self.1])
        }
        fn u64(&mut self) -> anyhow::Result<u64> {
            Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
        }
        fn u32(&mut self) -> anyhow::Result<u32> {
            Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
        }
    }
    let mut c = Cursor(bytes, 0);
    let n_queries = c.u64()? as usize;
    let mut lists = Vec::with_capacity(n_queries.min(bytes.len() / 8));
    for _ in 0..n_queries {
        let n = c.u64()? as usize;
        let mut list = Vec::with_capacity(n.min(bytes.len() / 8));
        for _ in 0..n {
            let similarity = f32::from_bits(c.u32()?);
            let len = c.u32()? as usize;
            let candidate_id = std::str::from_utf8(c.take(len)?)?.to_owned();
            list.push(Hit { candidate_id, similarity });
        }
        lists.push(list);
    }
    anyhow::ensure!(c.1 == bytes.len(), "{} trailing bytes after the hit lists", bytes.len() - c.1);
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(id: &str, s: f32) -> Hit {
        Hit { candidate_id: id.into(), similarity: s }
    }

    #[test]
    fn topk_keeps_best_with_id_tie_break() {
        let mut t = TopK::new(3);
        for (id, s) in [("c", 0.5), ("a", 0.5), ("z", 0.9), ("b", 0.5), ("y", 0.1), ("mp-10", 0.5)] {
            t.offer(s, id);
        }
        assert_eq!(t.into_sorted(), vec![h("z", 0.9), h("a", 0.5), h("b", 0.5)]);
        // "mp-10" < "mp-9" bytewise.
        let mut t = TopK::new(1);
        t.offer(0.0, "mp-9");
        t.offer(-0.0, "mp-10");
        assert_eq!(t.into_sorted(), vec![h("mp-10", -0.0)]);
    }

    #[test]
    fn hits_round_trip_through_bytes_and_bad_buffers_are_errors() {
        let lists = vec![vec![h("mp-1", 0.25), h("ü,\"x", -0.0)], vec![], vec![h("a", f32::MIN_POSITIVE)]];
        let bytes = encode_hits(&lists);
        let back = decode_hits(&bytes).unwrap();
        assert_eq!(back, lists);
        assert!(back[0][1].similarity.is_sign_negative(), "bits preserved");
        assert!(decode_hits(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_hits(&extra).is_err());
    }

    #[test]
    fn merge_equals_sorting_the_union() {
        let a = vec![vec![h("a", 0.9), h("d", 0.5)], vec![h("x", 0.3)]];
        let b = vec![vec![h("b", 0.9), h("c", 0.5)], vec![]];
        let merged = merge_topk(vec![a, b], 3).unwrap();
        assert_eq!(merged[0], vec![h("a", 0.9), h("b", 0.9), h("c", 0.5)]);
        assert_eq!(merged[1], vec![h("x", 0.3)]);
        assert!(merge_topk(vec![vec![vec![]], vec![]], 3).is_err());
    }
}
