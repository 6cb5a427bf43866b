import io

from node._demo import run


def test_demo_converges_and_refuses_the_offline_overdraft():
    out = io.StringIO()
    assert run(out) is True
    text = out.getvalue()
    assert "converged: yes" in text
    assert "refuses to charge alice offline" in text
    after = text.split("After the exchange:")[1]
    digest_row = next(line for line in after.splitlines() if line.startswith("digest"))
    assert len(set(digest_row.split()[1:])) == 1
