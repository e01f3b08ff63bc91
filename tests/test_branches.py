"""Multi-branch ops (GoogLeNet, Inception v3, ShuffleNet v2): `branches` runs paths on its
input (or, `split`, on shares of its channels) and concatenates them; `shuffle G` permutes
the channels; pools may round up (`ceil`). A unit that starts with branches has no W_ij, so
each of its updates must read one input. The compiled module shows every path in gm.code and
equals the reference interpreter, forward and backward."""

import pytest
import torch
from torch.nn import functional as F

import cliquegraph
from cliquegraph import SpecError, count_params, elaborate
from cliquegraph.fmt import fmt
from cliquegraph.lower import lower
from cliquegraph.parse import parse
from cliquegraph.reference import NaiveNet
from cliquegraph.units import Branches, channel_shuffle
from conftest import stem_error

SPEC = """network g {{
  input 3x15x15
  stem {{
    conv 3x3 8
    pool max 3 stride 2 ceil
  }}
  blocks 2 {{
    layers {layers}
    width 16
    topology {topology}
    stages {stages}
    unit {{
      branches {{
        path {{
          conv 1x1 4
          bn eps 0.001
          relu
        }}
        path {{
          conv 1x1 2
          bn
          relu
          branches {{
            path {{
              conv 1x3 2
              bn
              relu
            }}
            path {{
              conv 3x1 2
              dropout 0.2
            }}
          }}
        }}
        path {{
          pool avg 3 stride 1 padding 1
          conv 1x1 8
        }}
      }}
    }}
    feature xn
    transit xn
  }}
  transition {{
    branches split {{
      path {{
      }}
      path {{
        conv 3x3 8 groups 8
        bn
        relu
      }}
    }}
    shuffle 2
  }}
  head {{
    scales last
    pool global
    fc 5
  }}
}}
"""


def spec(tmp_path, layers=2, topology="chain", stages=1, name="g.clq"):
    path = tmp_path / name
    path.write_text(SPEC.format(layers=layers, topology=topology, stages=stages))
    return path


def test_branches_print_back_as_written(tmp_path):
    text = spec(tmp_path).read_text()
    assert fmt(parse(text)) == text


def test_the_paths_are_in_gm_code_and_own_their_weights_per_layer(tmp_path):
    net = elaborate(spec(tmp_path))
    gm = cliquegraph.build(net)
    code = gm.code
    # each path's ops are nodes, the nested branches' too, then one concatenation
    assert "self.block1.x1_branches0.p0_conv0(" in code
    assert "self.block1.x2_branches0.p1_branches3.p1_conv0(" in code
    assert "b1_x2_s1 = torch.cat([" in code
    assert "transition1_branches0_p1 = " in code and ".narrow(1, 8, 8)" in code
    assert count_params(net) == sum(p.numel() for p in gm.parameters())
    assert not [n for n, _ in gm.named_parameters() if ".w_" in n]  # no W_ij: no first conv


@pytest.mark.parametrize("training", [False, True])
def test_branches_equal_the_naive_interpreter(tmp_path, training):
    net = elaborate(spec(tmp_path))
    gm = lower(net).double().train(training)
    ref = NaiveNet(net, gm).train(training)
    x = torch.randn(3, 3, 15, 15, dtype=torch.float64)

    def run(module):
        torch.manual_seed(5)
        return module(x)

    torch.testing.assert_close(run(gm), run(ref))
    if training:
        params = list(gm.parameters())
        g1 = torch.autograd.grad(run(gm).square().sum(), params)
        g2 = torch.autograd.grad(run(ref).square().sum(), params)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b)


def test_the_branches_module_alone_runs_as_its_reference(tmp_path):
    """units.Branches (what op_module makes of the op) holds the modules the lowering calls
    one by one, under the same names, and runs the paths as the reference does."""
    from cliquegraph.ops import KINDS
    net = elaborate(spec(tmp_path))
    gm = cliquegraph.build(net, channels_last=False).eval()
    op = net.blocks[0].unit0.body[0]  # layer 1's: it reads X_0
    module = Branches(op).eval()
    module.load_state_dict(gm.block1.x1_branches0.state_dict())  # the same names
    x = torch.randn(2, 8, 7, 7)
    state = module.state_dict()
    ref = KINDS["branches"].reference(op, lambda *leaf: state[".".join(leaf)], x, False)
    torch.testing.assert_close(module(x), ref)
    assert module(x).shape[1:] == op.out_shape == (16, 7, 7)


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    nhwc = torch.randn(2, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    out = channel_shuffle(nhwc, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, channel_shuffle(nhwc.contiguous(), 2))


@pytest.mark.parametrize("size,k,s,p", [(112, 3, 2, 0), (15, 3, 2, 0), (14, 2, 2, 0),
                                        (7, 3, 1, 1), (8, 3, 2, 1), (5, 3, 3, 1)])
def test_a_ceil_pool_has_pytorchs_output_size(tmp_path, size, k, s, p):
    path = tmp_path / "c.clq"
    path.write_text(f"network c {{ input 3x{size}x{size}; stem {{ conv 1x1 4; "
                    f"pool max {k} stride {s} padding {p} ceil }}\n"
                    "blocks 1 { layers 1; width 4 } head { pool global; fc 2 } }")
    got = elaborate(path).stem[-1].out_shape
    want = F.max_pool2d(torch.zeros(1, 4, size, size), k, s, p, ceil_mode=True).shape[1:]
    assert got == tuple(want)


@pytest.mark.parametrize("ops,message", [
    ("conv 3x3 6; branches split { path {} path {} path {} path {} }",
     "shares 6 channels among 4 paths unevenly"),
    ("branches { path { conv 3x3 4 } path { conv 3x3 4 stride 2 } }",
     "the paths of branches end at different sizes"),
    ("shuffle 5", "shuffle 5 needs a width divisible by 5"),
    ("pool adaptive 2 ceil", "takes its output size only"),
])
def test_bad_branches_say_what_is_wrong(tmp_path, ops, message):
    assert message in stem_error(tmp_path, ops).message


def test_a_unit_starting_with_branches_needs_one_input_per_update(tmp_path):
    elaborate(spec(tmp_path, layers=3))
    with pytest.raises(SpecError) as e:
        elaborate(spec(tmp_path, layers=3, topology="clique", stages=2, name="c.clq"))
    assert "starts with branches, not a conv, and X_1 reads several inputs" in e.value.message


def test_a_unit_starting_with_a_conv_for_some_updates_only_is_refused(tmp_path):
    path = tmp_path / "mixed.clq"
    path.write_text(SPEC.format(layers=2, topology="chain", stages=1).replace(
        "    unit {\n      branches {", "    stride 2\n    unit {\n      if S > 1 {\n"
        "        conv 3x3 K stride S\n      }\n      branches {", 1))
    with pytest.raises(SpecError) as e:
        elaborate(path)
    assert "starts with a conv for some updates and with branches for others" in \
        e.value.message
