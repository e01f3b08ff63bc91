"""Properties of the language, checked on generated input.

- fmt is the inverse of parse: parse(fmt(s)) == parse(s), and fmt(fmt(x)) == fmt(x), for random
  ASTs and for random, messily written spec texts (comments, blank lines, `;`, parentheses).
- fmt never drops a comment.
- Nothing (garbage, random bytes, mutations of the real specs) makes the language raise anything
  but a SpecError.
- The block graphs have the edge counts of their topologies, for any layer count, and the
  parameter count is what the schedule updates.
"""

import re
import shutil

import pytest
from hypothesis import given, strategies as st

from cliquegraph import SpecError, ast, elaborate, fmt, parse, parse_file
from cliquegraph.elaborate import block_params
from cliquegraph.schedule import schedule
from conftest import SPECS

SPEC_FILES = sorted(SPECS.glob("*.clq"))
SPEC_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in SPEC_FILES}

# Names the generated ASTs use: params, symbols, C; never a word that is a keyword where an
# expression can start (if, not, true, false) or that changes a statement (edges).
NAMES = ["k", "T", "a", "b2", "theta", "_p", "C", "x0", "stage1", "stage2", "last", "all",
         "none", "clique", "dense", "chain", "shared", "widths", "layers", "width", "conv"]
FUNCS = ["floor", "ceil", "round", "min", "max", "len", "watts_strogatz", "erdos_renyi", "f"]
BINOPS = ["+", "-", "*", "/", "//", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or"]
ATTRS = ["layers", "width", "topology", "stages", "steps", "feature", "transit", "bottleneck",
         "bn", "dropout", "kernel"]


# ---- random ASTs ------------------------------------------------------------------------------

names = st.sampled_from(NAMES)
numbers = st.one_of(
    st.integers(0, 10**6),
    st.integers(0, 10**30),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(abs),
    st.floats(0, 1e300, allow_nan=False, allow_infinity=False).map(abs),
    st.sampled_from([0.5, 1e-05, 2.5e-10, 1e16, 3.0]),
).map(ast.Num)
leaves = st.one_of(
    numbers,
    st.builds(ast.Bool, st.booleans()),
    st.builds(ast.Name, names),
    st.lists(st.integers(0, 999), min_size=2, max_size=3).map(lambda v: ast.Dims(tuple(v))),
)


def exprs(depth=3):
    if depth == 0:
        return leaves
    sub = exprs(depth - 1)
    args = st.builds(ast.Arg, st.one_of(st.none(), names), sub)
    edge = st.builds(ast.Edge, sub, st.sampled_from(["->", "<->"]), sub)
    return st.one_of(
        leaves,
        st.builds(ast.BinOp, st.sampled_from(BINOPS), sub, sub),
        st.builds(ast.Unary, st.sampled_from(["-", "not"]), sub),
        st.builds(ast.IfElse, sub, sub, sub),
        st.lists(sub, max_size=3).map(lambda xs: ast.List(tuple(xs))),
        st.builds(ast.Call, st.sampled_from(FUNCS), st.lists(args, max_size=3).map(tuple)),
        st.lists(edge, max_size=3).map(lambda es: ast.EdgeList(tuple(es))),
    )


expr = exprs(3)
small_expr = exprs(1)


def tuples(strategy, max_size=3):
    return st.lists(strategy, max_size=max_size).map(tuple)


def ifs(inner):
    return st.builds(ast.If, small_expr, tuples(inner, 2), tuples(inner, 2))


def _op_args(kind):
    atom = st.one_of(leaves, small_expr)
    opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
    if kind == "conv":
        return st.fixed_dictionaries({"kernel": atom, "out": small_expr, "stride": opt(atom),
                                      "padding": opt(atom),
                                      "bias": opt(st.just(ast.Bool(True)))})
    if kind == "pool":
        return st.one_of(
            st.fixed_dictionaries({"mode": st.sampled_from(["avg", "max"]).map(ast.Name),
                                   "kernel": atom, "stride": opt(atom), "padding": opt(atom)}),
            st.fixed_dictionaries({"mode": st.just(ast.Name("global"))}))
    key = {"dropout": "p", "se": "reduction", "fc": "out", "scales": "value"}.get(kind)
    return st.fixed_dictionaries({key: small_expr} if key else {})


def _make_op(kind, args):
    return ast.Op(kind, tuple(sorted((k, v) for k, v in args.items() if v is not None)))


plain_ops = st.sampled_from(["conv", "bn", "relu", "dropout", "pool", "se", "fc", "scales"]) \
    .flatmap(lambda kind: _op_args(kind).map(lambda args: _make_op(kind, args)))
ops = st.one_of(plain_ops, ifs(plain_ops))

edges = st.builds(ast.Edge, small_expr, st.sampled_from(["->", "<->"]), small_expr)
edge_lists = tuples(edges, 4).map(ast.EdgeList)
plain_attrs = st.one_of(
    st.builds(ast.Attr, st.sampled_from(ATTRS), expr),
    st.builds(ast.Attr, st.just("topology"), edge_lists),
    st.builds(ast.Attr, st.just("topology"),  # one per block
              tuples(st.one_of(edge_lists, small_expr)).map(ast.List)),
)
attrs = st.one_of(plain_attrs, ifs(plain_attrs))

plain_stmts = st.one_of(
    st.builds(ast.Param, names, expr),
    st.builds(ast.Input, expr),
    st.builds(ast.Section, st.sampled_from(["stem", "transition", "head"]), tuples(ops, 4)),
    st.builds(ast.Blocks, st.one_of(st.none(), small_expr), tuples(attrs, 4)),
)
stmts = st.one_of(plain_stmts, ifs(plain_stmts))
networks = st.builds(ast.Network, st.sampled_from(["net", "cliquenet_s3", "n2"]),
                     st.one_of(st.none(), st.sampled_from(["base", "densenet121"])),
                     tuples(stmts, 5))
includes = st.sampled_from(["base.clq", "../specs/s3.clq", "a b#c.clq"]).map(ast.Include)
spec_files = st.lists(st.one_of(includes, networks), max_size=3).map(
    lambda items: ast.SpecFile(tuple(items)))


@given(spec_files)
def test_fmt_prints_an_ast_that_parses_back_to_itself(spec):
    text = fmt(spec)
    again = parse(text)
    assert again == spec
    assert fmt(again) == text


@given(expr)
def test_fmt_of_any_expression_parses_back_to_it(e):
    spec = ast.SpecFile((ast.Network("n", None, (ast.Param("x", e),)),))
    assert parse(fmt(spec)) == spec


# ---- random, messily written texts ------------------------------------------------------------

class _Messy:
    """Writes an AST as valid .clq text the way a hurried person might: extra parentheses,
    `;`, blank lines, comments at line ends and on their own lines, trailing commas."""

    def __init__(self, draw):
        self.draw = draw

    def flip(self, p=0.3):
        return self.draw(st.floats(0, 1)) < p

    def sep(self):
        """Whitespace between two tokens, maybe with a comment and a line break."""
        choice = self.draw(st.sampled_from([" ", " ", " ", "\n", "  \n\n  ", "\t", "comment"]))
        if choice == "comment":
            return " " + self.comment() + "\n"
        return choice

    def comment(self):
        body = self.draw(st.text(st.characters(blacklist_categories=("Cs",),
                                               blacklist_characters="\n"), max_size=12))
        return "#" + body

    def end(self):
        return self.draw(st.sampled_from(["\n", "; ", ";;\n", " ", "\n\n"]))

    def expr(self, e):
        s = self.sep
        if isinstance(e, ast.Num):
            text = fmt_expr(e)
        elif isinstance(e, ast.Call):
            args = [(f"{a.name}{s()}={s()}" if a.name else "") + self.expr(a.value)
                    for a in e.args]
            trail = "," if args and self.flip() else ""
            text = f"{e.func}({s()}" + f"{s()},{s()}".join(args) + trail + ")"
        elif isinstance(e, ast.List):
            trail = "," if e.items and self.flip() else ""
            text = "[" + f",{s()}".join(self.expr(x) for x in e.items) + trail + "]"
        elif isinstance(e, ast.BinOp):
            text = f"({self.expr(e.left)}{s()}{e.op}{s()}{self.expr(e.right)})"
        elif isinstance(e, ast.Unary):
            text = f"({e.op}{s()}{self.expr(e.operand)})"
        elif isinstance(e, ast.IfElse):
            text = (f"(if {self.expr(e.cond)}{s()}then {self.expr(e.then)}{s()}"
                    f"else {self.expr(e.else_)})")
        elif isinstance(e, ast.EdgeList):
            edges = [f"{self.expr(x.src)}{s()}{x.arrow}{s()}{self.expr(x.dst)}" for x in e.edges]
            trail = "," if edges and self.flip() else ""
            text = f"edges{s()}{{" + f",{s()}".join(edges) + trail + "}"
        else:
            text = fmt_expr(e)
        return f"({text})" if self.flip(0.1) else text

    def body(self, items, fn):
        return "{" + self.sep() + "".join(fn(x) + self.end() for x in items) + "}"

    def if_(self, node, fn):
        text = f"if {self.expr(node.cond)} " + self.body(node.then, fn)
        if node.else_ or self.flip(0.2):
            text += f"{self.sep()}else " + self.body(node.else_, fn)
        return text

    def op(self, o):
        if isinstance(o, ast.If):
            return self.if_(o, self.op)
        a = o.arg
        if o.kind == "conv":
            # after an atom every keyword is reserved: a param called `layers` needs (layers)
            parts = ["conv", f"({self.expr(a('kernel'))})", f"({self.expr(a('out'))})"]
            opts = [f"{k} {self.expr(a(k))}" for k in ("stride", "padding") if a(k) is not None]
            opts += ["bias"] if a("bias") is not None else []
            return " ".join(parts + self.draw(st.permutations(opts)))
        if o.kind == "pool":
            parts = ["pool", a("mode").id]
            if a("kernel") is not None:
                parts.append(f"({self.expr(a('kernel'))})")
            parts += [f"{k} {self.expr(a(k))}" for k in ("stride", "padding") if a(k) is not None]
            return self.sep().join(parts)
        if o.kind in ("bn", "relu"):
            return o.kind
        key, word = {"dropout": ("p", "dropout"), "se": ("reduction", "se reduction"),
                     "fc": ("out", "fc"), "scales": ("value", "scales")}[o.kind]
        return f"{word}{self.sep()}{self.expr(a(key))}"

    def attr(self, x):
        if isinstance(x, ast.If):
            return self.if_(x, self.attr)
        return f"{x.name}{self.sep()}{self.expr(x.value)}"

    def stmt(self, x):
        if isinstance(x, ast.If):
            return self.if_(x, self.stmt)
        if isinstance(x, ast.Param):
            return f"param {x.name}{self.sep()}={self.sep()}{self.expr(x.value)}"
        if isinstance(x, ast.Input):
            return f"input {self.expr(x.value)}"
        if isinstance(x, ast.Section):
            return x.kind + " " + self.body(x.ops, self.op)
        count = f" {self.expr(x.count)} " if x.count is not None else " "
        return "blocks" + count + self.body(x.attrs, self.attr)

    def file(self, spec):
        out = []
        for item in spec.items:
            if self.flip(0.3):
                out.append(self.comment() + "\n")
            if isinstance(item, ast.Include):
                out.append(f'include "{item.path}"')
            else:
                ext = f" extends {item.extends}" if item.extends else ""
                out.append(f"network {item.name}{ext} " + self.body(item.body, self.stmt))
            out.append(self.draw(st.sampled_from(["\n", "\n\n", " ", ";\n", "  " ])))
            if self.flip(0.3):
                out.append(" " + self.comment() + "\n")
        return "".join(out)


def fmt_expr(e):
    from cliquegraph.fmt import expr as print_expr
    return print_expr(e)


@st.composite
def messy_texts(draw):
    spec = draw(spec_files)
    return spec, _Messy(draw).file(spec)


def _comment_chars(spec):
    return re.sub(r"\s", "", "".join(text for _, _, text in spec.comments))


@given(messy_texts())
def test_messy_text_parses_to_its_ast_and_fmt_is_canonical(case):
    spec, text = case
    parsed = parse(text)
    assert parsed == spec
    canonical = fmt(parsed)
    again = parse(canonical)
    assert again == parsed
    assert fmt(again) == canonical
    assert _comment_chars(again) == _comment_chars(parsed)  # no comment lost, none reordered


@given(st.data())
def test_fmt_of_a_spec_with_comments_sprinkled_in_is_idempotent(data):
    name = data.draw(st.sampled_from(sorted(SPEC_TEXTS)))
    lines = SPEC_TEXTS[name].split("\n")
    at = data.draw(st.lists(st.integers(0, len(lines) - 1), max_size=6))
    for i in sorted(at, reverse=True):
        lines[i] += "  # note " + str(i)
    text = "\n".join(lines)
    parsed = parse(text)
    canonical = fmt(parsed)
    assert parse(canonical) == parsed
    assert fmt(parse(canonical)) == canonical
    assert _comment_chars(parse(canonical)) == _comment_chars(parsed)


# ---- garbage and mutations: nothing but SpecError ---------------------------------------------

@pytest.fixture(scope="module")
def spec_copy(tmp_path_factory):
    """A copy of specs/: mutants are written next to the files they include."""
    folder = tmp_path_factory.mktemp("specs")
    for p in SPEC_FILES:
        shutil.copy(p, folder / p.name)
    return folder


def _only_spec_errors(path):
    """parse_file + fmt + elaborate raise nothing but SpecError; fmt round-trips what parses."""
    try:
        spec = parse_file(path)
    except SpecError as err:
        assert str(err).startswith(str(path))
        return
    canonical = fmt(spec)
    assert parse(canonical) == spec
    try:
        elaborate(path)
    except SpecError as err:
        assert str(err)  # renders


NUMBERS_IN = re.compile(r"\b[0-9]+(\.[0-9]+)?\b")
NAMES_IN = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
REPLACEMENT_NUMBERS = ["0", "1", "2", "3", "7", "16", "64", "100", "1001", "65537", "0.5", "1e400",
                       "99999999999999999999999", "00", "1.0"]
REPLACEMENT_NAMES = ["k", "T", "kk", "stage3", "stage1", "x0", "last", "none", "all", "C",
                     "layers", "blocks", "if", "else", "then", "not", "param", "network", "edges",
                     "pool", "global", "avg", "conv", "dense", "chain", "watts_strogatz", "len",
                     "extends", "include", "bn", "shared", "true", "false", "foo"]


@st.composite
def mutants(draw):
    name = draw(st.sampled_from(sorted(SPEC_TEXTS)))
    text = SPEC_TEXTS[name]
    kind = draw(st.sampled_from(["truncate", "delete_lines", "numbers", "names", "punctuation",
                                 "bytes", "unicode", "duplicate"]))
    if kind == "truncate":
        return text[:draw(st.integers(0, len(text)))].encode()
    if kind == "delete_lines":
        lines = text.split("\n")
        drop = draw(st.sets(st.integers(0, len(lines) - 1), min_size=1, max_size=4))
        return "\n".join(x for i, x in enumerate(lines) if i not in drop).encode()
    if kind in ("numbers", "names"):
        pattern, pool = ((NUMBERS_IN, REPLACEMENT_NUMBERS) if kind == "numbers"
                         else (NAMES_IN, REPLACEMENT_NAMES))
        spans = [m.span() for m in pattern.finditer(text)]
        picks = draw(st.lists(st.sampled_from(spans), min_size=1, max_size=3, unique=True))
        for a, b in sorted(picks, reverse=True):
            text = text[:a] + draw(st.sampled_from(pool)) + text[b:]
        return text.encode()
    if kind == "duplicate":  # a line pasted somewhere else
        lines = text.split("\n")
        line = draw(st.sampled_from(lines))
        lines.insert(draw(st.integers(0, len(lines))), line)
        return "\n".join(lines).encode()
    at = draw(st.integers(0, len(text)))
    if kind == "punctuation":
        junk = draw(st.text(st.sampled_from(list("{}()[],;=+-*/%<>!#\"x.:")), min_size=1,
                            max_size=4))
        return (text[:at] + junk + text[at:]).encode()
    if kind == "unicode":
        junk = draw(st.text(min_size=1, max_size=4))
        return (text[:at] + junk + text[at:]).encode("utf-8", "surrogatepass")
    data = text.encode()
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


@given(mutants())
def test_mutated_specs_raise_nothing_but_spec_errors(spec_copy, data):
    path = spec_copy / "mutant.clq"
    path.write_bytes(data)
    _only_spec_errors(path)


@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_spec_errors(spec_copy, data):
    path = spec_copy / "garbage.clq"
    path.write_bytes(data)
    _only_spec_errors(path)


TOKENS = ["network", "n", "extends", "param", "input", "stem", "transition", "head", "blocks",
          "{", "}", "(", ")", "[", "]", ",", ";", "=", "->", "<->", "+", "-", "*", "//", "%",
          "==", "<", "and", "or", "not", "if", "then", "else", "layers", "width", "topology",
          "stages", "steps", "feature", "transit", "bottleneck", "bn", "dropout", "kernel",
          "edges", "conv", "pool", "global", "avg", "max", "se", "reduction", "fc", "scales",
          "relu", "stride", "padding", "bias", "3x3", "3x32x32", "0", "1", "2", "4", "0.5", "k",
          "C", "x0", "last", "stage2", "clique", "dense", "chain", "none", "all", "true",
          "floor", "len", "watts_strogatz", '"s0.clq"', "include", "#", "\n"]


@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup_raises_nothing_but_spec_errors(spec_copy, tokens):
    path = spec_copy / "soup.clq"
    path.write_text(" ".join(tokens), encoding="utf-8")
    _only_spec_errors(path)


@given(st.text(max_size=200))
def test_random_unicode_raises_nothing_but_spec_errors(text):
    try:
        spec = parse(text)
    except SpecError:
        return
    assert parse(fmt(spec)) == spec


# ---- IR invariants for any layer count --------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("topologies")


def _block_edges(folder, topology, n):
    path = folder / "topo.clq"
    path.write_text(f"network t {{ input 3x8x8; blocks 1 {{ layers {n}; width 2; "
                    f"topology {topology} }} head {{ pool global }} }}", encoding="utf-8")
    return elaborate(path).blocks[0].graph


@given(st.integers(1, 24), st.sampled_from(["clique", "dense", "chain"]))
def test_named_topologies_have_their_edge_counts(folder, n, topo):
    g = _block_edges(folder, topo, n)
    assert g.number_of_nodes() == n + 1
    assert g.number_of_edges() == {"clique": n * n, "dense": n * (n + 1) // 2,
                                   "chain": 2 * n - 1}[topo]
    assert all(g.has_edge(0, i) for i in range(1, n + 1)) or topo == "chain"


@given(st.integers(2, 12).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n), st.integers(1, n), st.booleans()),
             min_size=1, max_size=12))))
def test_an_edge_list_gives_exactly_its_edges(folder, case):
    n, raw = case
    wanted, written = set(), []
    for a, b, both in raw:
        pairs = {(a, b)} | ({(b, a)} if both and a != 0 else set())
        if a == b or pairs & wanted:
            continue
        wanted |= pairs
        written.append(f"{a} {'<->' if both and a != 0 else '->'} {b}")
    # every layer needs an input in Stage I: feed the ones that have none from X_0
    for i in range(1, n + 1):
        if not any(a < i and b == i for a, b in wanted):
            wanted.add((0, i))
            written.append(f"0 -> {i}")
    g = _block_edges(folder, "edges { " + ", ".join(written) + " }", n)
    assert set(g.edges()) == wanted


@given(st.integers(3, 20), st.integers(0, 2**32))
def test_a_generator_with_a_seed_always_draws_the_same_graph(folder, n, seed):
    topo = f"watts_strogatz(k = 2, p = 0.5, seed = {seed})"
    first = _block_edges(folder, topo, n)
    second = _block_edges(folder, topo, n)
    assert sorted(first.edges()) == sorted(second.edges())
    assert all(first.has_edge(j, i) for i, j in first.edges() if i != 0)  # W_ij with W_ji


def _params_from_the_schedule(b):
    """A block's parameters by their definition: each W_ij some update of the schedule reads,
    once; a BatchNorm per (stage, update), one per layer for the loop stages with `bn shared`."""
    g, mid = b.graph, b.bottleneck or 0
    used, bns = set(), {}
    for u in schedule(b).updates:
        used.update(u.weights)
        key = (u.layer, 1 if u.stage == 1 else (u.stage if b.bn == "per_stage" else "loop"))
        bns[key] = sum(g.nodes[l]["channels"] for l, _ in u.inputs) + mid
    convs = sum(g.edges[e]["out_channels"] * g.edges[e]["in_channels"]
                * g.edges[e]["kernel"][0] * g.edges[e]["kernel"][1] for e in used)
    convs += b.layers * b.width * mid * b.kernel[0] * b.kernel[1]
    return convs + 2 * sum(bns.values())


@given(n=st.integers(1, 7), stages=st.integers(1, 4), data=st.data(),
       topo=st.sampled_from(["clique", "dense", "chain", "edges { 0 -> 1, 1 <-> 2, 0 -> 3 }",
                             "watts_strogatz(k = 2, p = 0.5, seed = 3)"]),
       bn=st.sampled_from(["per_stage", "shared"]), mid=st.sampled_from(["none", "6"]),
       kernel=st.sampled_from(["3", "1x3"]))
def test_block_params_count_what_the_schedule_updates(folder, n, stages, data, topo, bn, mid,
                                                      kernel):
    if topo.startswith("edges"):
        n = 3
    if topo.startswith("watts"):
        n = max(n, 3)
    steps = data.draw(st.integers(0, n)) if stages > 1 else n
    path = folder / "params.clq"
    path.write_text(f"network t {{ input 5x8x8; blocks 1 {{ layers {n}; width 4; "
                    f"topology {topo}; stages {stages}; steps {steps}; bn {bn}; "
                    f"bottleneck {mid}; kernel {kernel} }} head {{ pool global }} }}",
                    encoding="utf-8")
    b = elaborate(path).blocks[0]
    assert block_params(b) == _params_from_the_schedule(b)
