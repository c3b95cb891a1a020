"""What the dense tests share: running `python -m timm_mod.dense` on a command line it must refuse."""
import pytest

from timm_mod import dense


@pytest.fixture
def refused(capsys):
    """Run `python -m timm_mod.dense` on an argv it must refuse as argparse does (exit status 2): its error line."""
    def run(argv):
        with pytest.raises(SystemExit) as info:
            dense.main(argv)
        assert info.value.code == 2
        return capsys.readouterr().err.splitlines()[-1]  # the one line under the usage
    return run
