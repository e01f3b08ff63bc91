"""Block graphs: the W_ij of a block as a networkx.DiGraph over X_0..X_n.

clique: X_0 -> every layer, and every ordered pair of layers (n + n(n-1) = n^2 edges).
dense:  X_0 -> every layer, and i -> j for i < j (n(n+1)/2 edges; DenseNet).
chain:  X_0 -> X_1, and both directions between neighbours (2n - 1 edges).
edges { ... }: exactly the edges listed (`a <-> b` is both directions).
A generator (watts_strogatz, erdos_renyi, barabasi_albert) draws an undirected graph over the
layers with its seed; each of its edges is a pair W_ij, W_ji, and X_0 feeds every layer.
"""

from __future__ import annotations

import networkx as nx

MAX_EDGES = 250_000  # W_ij in one network


def edge_count(kind: str, n: int) -> int:
    return {"clique": n * n, "dense": n * (n + 1) // 2, "chain": 2 * n - 1}[kind]


def named(kind: str, n: int):
    """Edge list (src, dst) of a named topology, in a fixed order."""
    if kind == "clique":
        return [(0, j) for j in range(1, n + 1)] + [
            (i, j) for i in range(1, n + 1) for j in range(1, n + 1) if i != j]
    if kind == "dense":
        return [(i, j) for j in range(1, n + 1) for i in range(0, j)]
    if kind == "chain":
        return [(0, 1)] + [e for i in range(1, n) for e in ((i, i + 1), (i + 1, i))]
    raise ValueError(kind)


def generated(kind: str, n: int, kwargs: dict):
    """Edges from a networkx random-graph generator over layers 1..n (raises ValueError).

    Graphs past MAX_EDGES are refused before they are drawn (Erdos-Renyi: by expectation, and
    again once drawn)."""
    seed = kwargs.get("seed", 0)
    if kind == "watts_strogatz":
        k = kwargs["k"]
        if not 1 <= k < n:
            raise ValueError(f"watts_strogatz needs 1 <= k < layers ({n}), got k = {k}")
        _check_size(kind, n, n * (k // 2))
        g = nx.watts_strogatz_graph(n, k, kwargs["p"], seed=seed)
    elif kind == "erdos_renyi":
        _check_size(kind, n, kwargs["p"] * n * (n - 1) / 2)
        g = nx.gnp_random_graph(n, kwargs["p"], seed=seed)
    elif kind == "barabasi_albert":
        m = kwargs["m"]
        if not 1 <= m < n:
            raise ValueError(f"barabasi_albert needs 1 <= m < layers ({n}), got m = {m}")
        _check_size(kind, n, m * (n - m))
        g = nx.barabasi_albert_graph(n, m, seed=seed)
    else:
        raise ValueError(kind)
    _check_size(kind, n, g.number_of_edges())
    pairs = sorted((min(a, b) + 1, max(a, b) + 1) for a, b in g.edges())
    return [(0, j) for j in range(1, n + 1)] + [e for a, b in pairs for e in ((a, b), (b, a))]


def _check_size(kind, n, pairs):
    if n + 2 * pairs > MAX_EDGES:
        raise ValueError(f"{kind} over {n} layers draws about {int(n + 2 * pairs):,} W_ij, past "
                         f"the limit of {MAX_EDGES:,}")


def block_graph(edges, n: int, c0: int, k: int, kernel, out: int, groups0: int = 1,
                groups: int = 1, out0: int = None) -> nx.DiGraph:
    """The IR graph of one block: node i has `channels`; edge (i, j) is W_ij, a slice of the
    first conv of X_j's unit (kernel, out channels, and its input channels per group: the
    first conv may be grouped, by groups0 on X_0's edges and groups on the others, where no
    update reads several inputs; out0: the out channels of X_0's edges where they differ, as
    an inverted residual unit's expansion of its input)."""
    g = nx.DiGraph()
    g.add_node(0, channels=c0, label="X_0")
    for i in range(1, n + 1):
        g.add_node(i, channels=k, label=f"X_{i}")
    for i, j in edges:
        if kernel is None:  # a unit with no first conv: the edge passes X_i on, no W_ij
            g.add_edge(i, j, kernel=None, in_channels=0, out_channels=0, label="")
            continue
        g.add_edge(i, j, kernel=tuple(kernel),
                   in_channels=g.nodes[i]["channels"] // (groups0 if i == 0 else groups),
                   out_channels=out0 if i == 0 and out0 is not None else out,
                   label=f"W_{i}{j}" if n < 10 else f"W_{i},{j}")
    return g


def stage1_inputs(g: nx.DiGraph, i: int):
    """Sources of layer i in Stage I: in-edges from lower nodes (X_0 included), ascending."""
    return sorted(l for l in g.predecessors(i) if l < i)


def loop_inputs(g: nx.DiGraph, i: int, n: int):
    """Sources of layer i in a stage >= 2, in Table 1's order: i+1..n, then 1..i-1."""
    preds = set(g.predecessors(i))
    return [l for l in list(range(i + 1, n + 1)) + list(range(1, i)) if l in preds]
