//! Directed graphs with typed edges, for finding dependency cycles.
//!
//! Owns the graph algorithms the transactional checkers share: a compact
//! adjacency (CSR) whose edges carry a bit mask of edge types, strongly
//! connected components (Tarjan, iterative so deep graphs cannot overflow
//! the stack) over any subset of edge types, and a breadth-first search for
//! the shortest path whose edge types satisfy a small automaton (e.g.
//! "exactly one anti-dependency"), with a work budget so a pathological
//! graph cannot make a check run forever.
//!
//! Must not touch: what the edge types mean (see [`crate::append`]); this
//! module knows nodes as `u32` and edge types as bits.

use std::collections::{HashMap, VecDeque};

/// Edge-type bit mask.
pub type Mask = u8;

/// A directed graph; parallel edges are merged into one edge whose mask is
/// the union of their types. Self-loops are dropped.
#[derive(Debug, Clone)]
pub struct Graph {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    masks: Vec<Mask>,
}

/// Strongly connected components, numbered in the order Tarjan's algorithm
/// completes them: if component `a` can reach a different component `b`,
/// then `b < a` (reverse topological order).
#[derive(Debug, Clone)]
pub struct Sccs {
    /// Component of each node.
    pub comp: Vec<u32>,
    /// Members of each component.
    pub members: Vec<Vec<u32>>,
}

impl Sccs {
    /// Components with more than one node (the only ones that hold cycles,
    /// since there are no self-loops).
    pub fn nontrivial(&self) -> impl Iterator<Item = (u32, &Vec<u32>)> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.len() > 1)
            .map(|(c, m)| (c as u32, m))
    }
}

/// The search ran out of budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// One edge of a path, with the single type it was used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from: u32,
    pub to: u32,
    pub bit: Mask,
}

impl Graph {
    /// Build from `(from, to, mask)` triples over nodes `0..n`. Edges naming
    /// a node `>= n` are a caller bug and are dropped.
    pub fn from_edges(n: usize, mut edges: Vec<(u32, u32, Mask)>) -> Graph {
        edges.retain(|&(a, b, m)| a != b && m != 0 && (a as usize) < n && (b as usize) < n);
        edges.sort_unstable_by_key(|&(a, b, _)| (a, b));
        let mut offsets = vec![0usize; n + 1];
        let mut targets = Vec::with_capacity(edges.len());
        let mut masks: Vec<Mask> = Vec::with_capacity(edges.len());
        let mut last: Option<(u32, u32)> = None;
        for (a, b, m) in edges {
            if last == Some((a, b)) {
                if let Some(x) = masks.last_mut() {
                    *x |= m;
                }
                continue;
            }
            last = Some((a, b));
            targets.push(b);
            masks.push(m);
            offsets[a as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        Graph {
            offsets,
            targets,
            masks,
        }
    }

    pub fn node_count(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn edge_count(&self) -> usize {
        self.targets.len()
    }

    /// Out-edges of `v` as `(target, mask)`.
    pub fn out(&self, v: u32) -> impl Iterator<Item = (u32, Mask)> + '_ {
        let (lo, hi) = self.range(v);
        self.targets[lo..hi]
            .iter()
            .copied()
            .zip(self.masks[lo..hi].iter().copied())
    }

    /// The mask of the edge `a -> b` (0 if none).
    pub fn mask(&self, a: u32, b: u32) -> Mask {
        let (lo, hi) = self.range(a);
        match self.targets[lo..hi].binary_search(&b) {
            Ok(i) => self.masks[lo + i],
            Err(_) => 0,
        }
    }

    fn range(&self, v: u32) -> (usize, usize) {
        let v = v as usize;
        if v + 1 >= self.offsets.len() {
            return (0, 0);
        }
        (self.offsets[v], self.offsets[v + 1])
    }

    /// Strongly connected components of the subgraph of edges whose mask
    /// intersects `allowed`.
    pub fn sccs(&self, allowed: Mask) -> Sccs {
        const UNSEEN: u32 = u32::MAX;
        let n = self.node_count();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut comp = vec![UNSEEN; n];
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut counter = 0u32;
        // (node, next edge position)
        let mut call: Vec<(u32, usize)> = Vec::new();
        for root in 0..n as u32 {
            if index[root as usize] != UNSEEN {
                continue;
            }
            index[root as usize] = counter;
            low[root as usize] = counter;
            counter += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            call.push((root, self.range(root).0));
            while let Some(frame) = call.last_mut() {
                let v = frame.0;
                let end = self.range(v).1;
                if frame.1 < end {
                    let e = frame.1;
                    frame.1 += 1;
                    if self.masks[e] & allowed == 0 {
                        continue;
                    }
                    let w = self.targets[e];
                    if index[w as usize] == UNSEEN {
                        index[w as usize] = counter;
                        low[w as usize] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w as usize] = true;
                        call.push((w, self.range(w).0));
                    } else if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(index[w as usize]);
                    }
                } else {
                    call.pop();
                    if let Some(&(u, _)) = call.last() {
                        low[u as usize] = low[u as usize].min(low[v as usize]);
                    }
                    if low[v as usize] == index[v as usize] {
                        let id = members.len() as u32;
                        let mut group = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w as usize] = false;
                            comp[w as usize] = id;
                            group.push(w);
                            if w == v {
                                break;
                            }
                        }
                        members.push(group);
                    }
                }
            }
        }
        Sccs { comp, members }
    }

    /// The shortest path from `from` to `to` over nodes accepted by
    /// `in_scope`, using edges whose types are in `allowed`, such that the
    /// automaton `step` (state, edge type) -> next state accepts it. Each
    /// edge may be used as any one of its allowed types. Every edge looked
    /// at costs one unit of `budget`.
    #[allow(clippy::too_many_arguments)]
    pub fn find_path(
        &self,
        from: u32,
        to: u32,
        initial: u8,
        allowed: Mask,
        in_scope: impl Fn(u32) -> bool,
        step: impl Fn(u8, Mask) -> Option<u8>,
        accept: impl Fn(u8) -> bool,
        budget: &mut u64,
    ) -> Result<Option<Vec<Step>>, Exhausted> {
        // (node, state) -> (previous node, previous state, edge type)
        let mut parent: HashMap<(u32, u8), (u32, u8, Mask)> = HashMap::new();
        let mut queue = VecDeque::new();
        parent.insert((from, initial), (from, initial, 0));
        queue.push_back((from, initial));
        while let Some((v, s)) = queue.pop_front() {
            if v == to && accept(s) {
                let mut path = Vec::new();
                let mut at = (v, s);
                while at != (from, initial) {
                    let (pv, ps, bit) = parent[&at];
                    path.push(Step {
                        from: pv,
                        to: at.0,
                        bit,
                    });
                    at = (pv, ps);
                }
                path.reverse();
                return Ok(Some(path));
            }
            for (w, mask) in self.out(v) {
                if *budget == 0 {
                    return Err(Exhausted);
                }
                *budget -= 1;
                let usable = mask & allowed;
                if usable == 0 || !in_scope(w) {
                    continue;
                }
                for bit in (0..8).map(|i| 1u8 << i).filter(|b| usable & b != 0) {
                    if let Some(s2) = step(s, bit)
                        && !parent.contains_key(&(w, s2))
                    {
                        parent.insert((w, s2), (v, s, bit));
                        queue.push_back((w, s2));
                    }
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mask = 1;
    const B: Mask = 2;

    #[test]
    fn parallel_edges_merge_and_self_loops_vanish() {
        let g = Graph::from_edges(3, vec![(0, 1, A), (0, 1, B), (2, 2, A), (1, 7, A)]);
        assert_eq!(g.edge_count(), 1);
        assert_eq!(g.mask(0, 1), A | B);
        assert_eq!(g.mask(1, 0), 0);
        assert_eq!(g.mask(9, 0), 0);
    }

    #[test]
    fn components_depend_on_the_allowed_edge_types() {
        // 0 -A-> 1 -A-> 2 -B-> 0, 3 alone
        let g = Graph::from_edges(4, vec![(0, 1, A), (1, 2, A), (2, 0, B)]);
        let all = g.sccs(A | B);
        assert_eq!(all.nontrivial().count(), 1);
        assert_eq!(all.comp[0], all.comp[2]);
        assert_ne!(all.comp[0], all.comp[3]);
        assert_eq!(g.sccs(A).nontrivial().count(), 0);
    }

    #[test]
    fn components_come_in_reverse_topological_order() {
        // {0,1} -> {2,3} -> 4
        let g = Graph::from_edges(
            5,
            vec![
                (0, 1, A),
                (1, 0, A),
                (1, 2, A),
                (2, 3, A),
                (3, 2, A),
                (3, 4, A),
            ],
        );
        let s = g.sccs(A);
        assert!(s.comp[4] < s.comp[2]);
        assert!(s.comp[2] < s.comp[0]);
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 200_000u32;
        let mut edges: Vec<_> = (0..n - 1).map(|i| (i, i + 1, A)).collect();
        edges.push((n - 1, 0, A));
        let g = Graph::from_edges(n as usize, edges);
        let s = g.sccs(A);
        assert_eq!(s.nontrivial().count(), 1);
        assert_eq!(s.members.iter().map(Vec::len).max(), Some(n as usize));
    }

    #[test]
    fn path_search_honours_the_automaton_and_the_budget() {
        // two routes from 0 to 3: 0-A->1-A->3 (short) and 0-B->2-A->3
        let g = Graph::from_edges(4, vec![(0, 1, A), (1, 3, A), (0, 2, B), (2, 3, A)]);
        let any = |_| true;
        let mut budget = 100;
        let short = g
            .find_path(0, 3, 0, A | B, any, |s, _| Some(s), |_| true, &mut budget)
            .unwrap()
            .unwrap();
        assert_eq!(short.len(), 2);
        // require at least one B edge: state 1 once a B was used
        let via_b = g
            .find_path(
                0,
                3,
                0,
                A | B,
                any,
                |s, bit| Some(if bit == B { 1 } else { s }),
                |s| s == 1,
                &mut budget,
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            via_b[0],
            Step {
                from: 0,
                to: 2,
                bit: B
            }
        );
        // forbid B entirely and require it: impossible
        let none = g
            .find_path(0, 3, 0, A, any, |s, _| Some(s), |s| s == 1, &mut budget)
            .unwrap();
        assert!(none.is_none());
        let mut tiny = 1;
        assert_eq!(
            g.find_path(0, 3, 0, A | B, any, |s, _| Some(s), |_| true, &mut tiny),
            Err(Exhausted)
        );
    }
}
