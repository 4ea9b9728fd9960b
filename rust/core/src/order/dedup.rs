//! Semantic near-duplicate removal: a document whose similarity to an
//! already kept neighbour reaches the threshold leaves the order. Documents
//! are visited by ascending id, so the first copy is the one kept; nothing is
//! deleted from the shards.

use super::graph::Graph;

/// A dropped document and the kept one it duplicates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Duplicate {
    /// The document left out of the order.
    pub doc: u32,
    /// The kept neighbour it is a near-copy of.
    pub of: u32,
    /// Their similarity.
    pub sim: f32,
}

/// Marks near-duplicates in `active` (only active documents are considered,
/// and only active ones can be kept) and returns them. O(edges).
pub fn dedup(graph: &Graph, threshold: f32, active: &mut [bool]) -> Vec<Duplicate> {
    let mut dropped = Vec::new();
    for i in 0..graph.len() {
        if !active[i] {
            continue;
        }
        let hit = graph
            .neighbors(i)
            .iter()
            .zip(graph.sims(i))
            .take_while(|(_, &s)| s >= threshold)
            .find(|(&j, _)| (j as usize) < i && active[j as usize]);
        if let Some((&j, &s)) = hit {
            active[i] = false;
            dropped.push(Duplicate {
                doc: i as u32,
                of: j,
                sim: s,
            });
        }
    }
    dropped
}
