import re

from codistill.reporting import reported


def test_off_a_terminal_a_loop_reports_one_line_per_tenth_and_at_its_end(capsys):
    items = list(reported(iter(range(25)), "evaluate val", 25))
    assert items == list(range(25))
    lines = capsys.readouterr().out.splitlines()
    done = [
        int(
            re.match(
                r"evaluate val: (\d+)/25 images, [\d.e+]+ images/s, ETA \d+m\d\ds$", line
            ).group(1)
        )
        for line in lines
    ]
    assert done == [3, 6, 9, 12, 15, 18, 21, 24, 25]


def test_a_loop_shorter_than_ten_reports_every_item(capsys):
    assert list(reported(["a", "b"], "export cnn: scoring fp32 on val", 2)) == ["a", "b"]
    out = capsys.readouterr().out
    assert out.count("export cnn: scoring fp32 on val: ") == 2 and "2/2 images" in out
