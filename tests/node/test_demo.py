import io
import re

from node._demo import run


def test_demo_converges_moves_rights_through_the_relay_and_refuses_the_offline_charge():
    out = io.StringIO()
    assert run(out) is True
    text = out.getvalue()
    assert text.rstrip().endswith("converged: yes")
    assert "basement: charge of 899 to alice refused" in text
    assert "till-2 charges alice 899 once the rights have arrived" in text
    after = text.split("After:")[1]
    digests = next(line for line in after.splitlines() if line.startswith("digest")).split()[1:]
    assert len(set(digests[:4])) == 1 and digests[4] == "(blind)"
    balances = next(line for line in after.splitlines() if line.startswith("alice balance")).split()[2:]
    assert balances[:4] == ["4101"] * 4
    held = next(line for line in after.splitlines() if line.startswith("entries held")).split()[2:]
    assert len(set(held)) == 1  # the relay holds every entry too
    assert re.search(r"incidents: 0", text)
