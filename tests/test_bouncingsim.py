"""BouncingSim as the paper's code defines it: official-style polygon scenes, Box2D ground truth
identical to the official engine's, the exact polygon reference passing through the real sandbox,
and verdicts/feedback as the official verifier gives them (facts from the differential check in
docs/environments.md, restated as concrete answers)."""

from __future__ import annotations

import base64
import json
import math
import zlib

import pytest

from resd.envs import get
from resd.envs.bouncing import judge
from resd.envs.bouncing.engine import checked_ground_truth, ground_truth, mean_distance, simulate
from resd.envs.bouncing.polygons import trajectory
from resd.envs.bouncing.scene import (EASY, MEDIUM, MIN_START_DISTANCE, OBJECT_RADIUS, PLACEMENT_MARGIN, TIMESTAMPS,
                                      Body, Scene, draw_scene)
from resd.envs.bouncingsim import (BouncingSimEasy, BouncingSimMedium, assertion_text, main, parse_assertion,
                                   record_task, reference_program, scene_from_prompt, scene_record, write_records)
from resd.errors import UserError

# A scene drawn by the official generator (MULTI_OBJ, easy, seed 1001) and positions its engine
# (Box2D, dt = 1/4000) gives at t = 0.5, 1.0, 1.5: the official dataset's numbers for this scene.
OFFICIAL_EASY = Scene(container_sides=4, bodies=(
    Body(4, (763.0, 558.0), (-400.88, -322.38)),
    Body(6, (690.0, 791.0), (-59.93, -578.74)),
    Body(6, (654.0, 836.0), (435.44, 314.93))))
OFFICIAL_EASY_TRUTH = [[[748.24, 582.55], [660.08, 501.43], [854.12, 975.78]],
                       [[909.37, 782.99], [869.87, 592.66], [696.65, 758.01]],
                       [[977.06, 845.4], [818.65, 835.09], [611.99, 613.08]]]
# The same for medium (seed 2002): four objects, two of them triangles.
OFFICIAL_MEDIUM = Scene(container_sides=3, bodies=(
    Body(6, (821.0, 743.0), (602.56, 57.98)),
    Body(3, (747.0, 727.0), (-691.9, 270.67)),
    Body(3, (889.0, 783.0), (185.4, -777.3)),
    Body(4, (833.0, 657.0), (-168.07, -599.92))))
OFFICIAL_MEDIUM_TRUTH = [[[1047.24, 771.45], [744.14, 862.44], [735.14, 821.22], [585.8, 650.85]],
                         [[916.63, 715.62], [723.9, 914.48], [603.05, 927.66], [769.56, 659.87]],
                         [[967.43, 684.19], [582.0, 889.75], [634.59, 539.18], [584.19, 510.61]]]


@pytest.fixture(scope="module")
def easy():
    return BouncingSimEasy(train_size=2, test_size=2)


@pytest.fixture(scope="module")
def official_task():
    """The official easy scene as a hub-schema record, and its Task."""
    record = scene_record(OFFICIAL_EASY, ground_truth(OFFICIAL_EASY), EASY, 0)
    return record_task(record, "official-easy", "test")


def _code(body: str) -> str:
    return f"Here is my program.\n```python\n{body}\n```\n"


def _wrapped(scene: Scene, body: str) -> str:
    """The reference program, renamed to _true, followed by a mutation of it."""
    return _code(reference_program(scene).replace("def predict_position(t):", "def _true(t):") + "\n\n" + body)


# --- scenes and ground truth ---------------------------------------------------------------------

@pytest.mark.parametrize("difficulty", [EASY, MEDIUM])
def test_scenes_follow_the_official_parameters(difficulty):
    for i in range(6):
        scene, truth = draw_scene(difficulty, f"test/{difficulty.name}/{i}")
        assert 3 <= scene.container_sides <= 6 and scene.container_radius == 375.0
        assert scene.container_center == (750.0, 750.0) and scene.object_radius == OBJECT_RADIUS == 20.0
        assert difficulty.objects[0] <= len(scene.bodies) <= difficulty.objects[1]
        allowed = 375.0 * math.cos(math.pi / scene.container_sides) - 20.0 - PLACEMENT_MARGIN
        for a, body in enumerate(scene.bodies):
            assert 3 <= body.sides <= 6
            assert all(c == int(c) for c in body.position)  # the official files store integer positions
            assert all(round(c, 2) == c for c in body.velocity)
            speed = math.hypot(*body.velocity)
            assert difficulty.speed[0] - 0.02 <= speed <= difficulty.speed[1] + 0.02
            assert math.dist(body.position, scene.container_center) <= allowed + 1.0  # +1: rounding to integers
            for other in scene.bodies[:a]:
                assert math.dist(body.position, other.position) >= MIN_START_DISTANCE - 1.5
        assert scene.timestamps == TIMESTAMPS == tuple(round(0.1 * k, 2) for k in range(1, 16))
        assert truth == ground_truth(scene)


def test_box2d_reproduces_the_official_ground_truth_exactly():
    assert simulate(OFFICIAL_EASY, (0.5, 1.0, 1.5)) == OFFICIAL_EASY_TRUTH
    assert simulate(OFFICIAL_MEDIUM, (0.5, 1.0, 1.5)) == OFFICIAL_MEDIUM_TRUTH
    # Sampling several timestamps in one run equals stepping afresh for each (the official way).
    assert simulate(OFFICIAL_EASY, TIMESTAMPS)[4::5] == OFFICIAL_EASY_TRUTH
    assert checked_ground_truth(OFFICIAL_EASY) == simulate(OFFICIAL_EASY, TIMESTAMPS)


def test_exact_polygon_model_matches_the_engine_and_conserves_energy():
    for scene, truth in ((OFFICIAL_EASY, OFFICIAL_EASY_TRUTH), (OFFICIAL_MEDIUM, OFFICIAL_MEDIUM_TRUTH)):
        args = (scene.container_sides, scene.container_center, scene.container_radius, scene.object_radius,
                [b.sides for b in scene.bodies], [b.position for b in scene.bodies], [b.velocity for b in scene.bodies])
        exact = trajectory(*args, (0.5, 1.0, 1.5))
        assert max(mean_distance(a, b) for a, b in zip(exact, truth)) < 1.0
        # Kinetic energy (mass = area) is unchanged by elastic contacts.
        areas = [0.5 * b.sides * 400 * math.sin(2 * math.pi / b.sides) for b in scene.bodies]
        before = sum(m * (vx * vx + vy * vy) for m, (vx, vy) in zip(areas, args[6]))
        a, b = trajectory(*args, (1.2, 1.2001))
        after = sum(m * ((q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2) / 1e-8 for m, p, q in zip(areas, a, b))
        assert after == pytest.approx(before, rel=1e-3)


def test_contact_is_between_the_polygons_not_their_circles():
    # Two squares (a vertex on +x, so their faces look along the diagonals) fly at each other
    # along the diagonal: the faces meet when the centres are 2 x 14.14 apart (t = 0.4 s), not
    # 40 apart as circles would (t = 0.36 s). Equal masses swap velocities.
    squares = Scene(container_sides=6, bodies=(Body(4, (700.0, 700.0), (100.0, 100.0)),
                                               Body(4, (800.0, 800.0), (-100.0, -100.0))))
    args = (6, (750.0, 750.0), 375.0, 20.0, [4, 4], [(700.0, 700.0), (800.0, 800.0)],
            [(100.0, 100.0), (-100.0, -100.0)])
    (left, right), = trajectory(*args, [0.5])
    assert left == pytest.approx([730.0, 730.0]) and right == pytest.approx([770.0, 770.0])
    assert simulate(squares, (0.5,)) == [[[729.92, 729.92], [770.08, 770.08]]]  # Box2D's contact skin: 0.08


def test_unequal_masses_conserve_momentum_and_match_the_engine():
    # A triangle (area 519.6) strikes a hexagon (area 1039.2) off-centre, on one of its faces.
    scene = Scene(container_sides=6, bodies=(Body(3, (600.0, 755.0), (200.0, 0.0)), Body(6, (700.0, 750.0), (0.0, 0.0))))
    args = (6, (750.0, 750.0), 375.0, 20.0, [3, 6], [(600.0, 755.0), (700.0, 750.0)], [(200.0, 0.0), (0.0, 0.0)])
    a, b = trajectory(*args, (0.6, 0.6001))
    velocities = [((q[0] - p[0]) / 1e-4, (q[1] - p[1]) / 1e-4) for p, q in zip(a, b)]
    masses = [0.5 * 3 * 400 * math.sin(2 * math.pi / 3), 0.5 * 6 * 400 * math.sin(2 * math.pi / 6)]
    assert sum(m * v[0] for m, v in zip(masses, velocities)) == pytest.approx(masses[0] * 200.0, rel=1e-4)
    assert sum(m * v[1] for m, v in zip(masses, velocities)) == pytest.approx(0.0, abs=1e-3)
    assert velocities[1][1] < -1.0  # the face turns the push: the hexagon moves off the line
    assert mean_distance(a, simulate(scene, (0.6,))[0]) < 0.5


# --- records: generated, file, hub ---------------------------------------------------------------

def test_generated_records_have_the_hub_schema_and_read_back_from_files(tmp_path):
    env = BouncingSimEasy(train_size=2, test_size=1)
    record = env.records("train")[0]
    assert set(record) == {"messages", "ground_truth", "dataset", "id", "difficulty", "timestamps", "tolerance",
                           "prompt_setting", "scene_config"}
    assert record["dataset"] == "ballsim" and record["difficulty"] == 1 and record["id"] == "G_1_1"
    assert record["prompt_setting"] == "function" and record["tolerance"] == 50.0
    assert record["ground_truth"][0].startswith("assert check_distance(predict_position(0.10), [[")
    assert record["ground_truth"][0].endswith("]]) <= 50.0")
    write_records(env.records("train"), tmp_path / "train.jsonl")
    write_records(env.records("test"), tmp_path / "test" / "part-0.jsonl")
    back = BouncingSimEasy(source="file", train_path=str(tmp_path / "train.jsonl"), test_path=str(tmp_path / "test"))
    assert back.sizes() == {"train": 2, "test": 1}
    for split in ("train", "test"):
        assert [(t.id, t.prompt, t.meta) for t in back.tasks(split)] == [(t.id, t.prompt, t.meta) for t in env.tasks(split)]
    capped = BouncingSimEasy(source="file", train_path=str(tmp_path / "train.jsonl"), train_size=1)
    assert capped.sizes() == {"train": 1, "test": 0}
    # The export command writes the same records, and `path` finds both splits in its folder.
    assert main([str(tmp_path / "cli"), "--train-size", "2", "--test-size", "1"]) == 0
    assert (tmp_path / "cli" / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()
    folder = BouncingSimEasy(source="file", path=str(tmp_path / "cli"))
    assert [t.meta for t in folder.tasks("test")] == [t.meta for t in env.tasks("test")]
    (tmp_path / "cli" / "train-00001.jsonl").write_text((tmp_path / "train.jsonl").read_text())
    with pytest.raises(UserError, match="several train record files"):
        BouncingSimEasy(source="file", path=str(tmp_path / "cli"))


def test_hub_records_without_a_scene_config_read_the_scene_from_the_prompt():
    lines = ("- Container 1: regular polygon with 4 sides, radius 375.00m, center at (750, 750); initial orientation 0.000 rad\n"
             "- Ball 1: regular polygon (4 sides), radius 20.0m, initial position (763, 558), "
             "initial velocity (-400.88, -322.38) m/s, no angular velocity\n"
             "- Ball 2: regular polygon (6 sides), radius 20.0m, initial position (690, 791), "
             "initial velocity (-59.93, -578.74) m/s, no angular velocity\n"
             "- Ball 3: regular polygon (6 sides), radius 20.0m, initial position (654, 836), "
             "initial velocity (435.44, 314.93) m/s, no angular velocity\n"
             "- no effective gravity (treated as zero).")
    assert scene_from_prompt(lines, TIMESTAMPS) == OFFICIAL_EASY
    assert scene_from_prompt(lines.replace("no effective gravity", "gravity (0, -1000)"), TIMESTAMPS) is None
    record = {"messages": [{"role": "user", "content": lines}], "id": "G_1_1", "difficulty": 1,
              "ground_truth": json.dumps([assertion_text(t, p) for t, p in zip((0.5, 1.0, 1.5), OFFICIAL_EASY_TRUTH)])}
    task = record_task(record, "hub-0", "train")
    assert task.prompt_text == lines and [t["t"] for t in task.meta["tests"]] == [0.5, 1.0, 1.5]
    assert BouncingSimEasy.scene(task) == Scene(container_sides=4, bodies=OFFICIAL_EASY.bodies, timestamps=(0.5, 1.0, 1.5))
    # The official formatter's layout (prompt, reward_model.ground_truth as JSON, extra_info) reads the same.
    formatted = {"prompt": record["messages"], "reward_model": {"style": "bouncingsim", "ground_truth": record["ground_truth"]},
                 "extra_info": {"split": "train", "index": "G_1_1", "difficulty": 1, "axes": "G"}}
    assert record_task(formatted, "hub-0", "train") == task


def test_record_tests_are_parsed_never_executed_or_unpickled():
    assert parse_assertion("assert check_distance(predict_position(0.50), [[1.5, 2.0], [3, 4]]) <= 50.0") == \
        {"t": 0.5, "expected": [[1.5, 2.0], [3.0, 4.0]], "tolerance": 50.0}
    for bad in ("assert __import__('os').system('x')", "assert check_distance(predict_position(0.5), [[1, 2]]) <= 50; 1",
                "assert check_distance(predict_position(t), [[1, 2]]) <= 50", 42):
        with pytest.raises(UserError):
            parse_assertion(bad)
    pickled = base64.b64encode(zlib.compress(b"\x80\x04N.")).decode()
    with pytest.raises(UserError, match="neither a list nor JSON"):
        record_task({"messages": [{"role": "user", "content": "x"}], "ground_truth": pickled}, "p", "train")
    with pytest.raises(UserError, match="source"):
        BouncingSimEasy(source="s3")
    with pytest.raises(UserError, match="needs `path`"):
        BouncingSimEasy(source="file")


def test_paper_sizes_and_registry():
    assert get("bouncingsim-easy").sizes() == {"train": 640, "test": 100}
    assert get("bouncingsim-medium").sizes() == {"train": 320, "test": 100}
    assert BouncingSimEasy.hub_dataset == "bouncingsim/bouncingsim-MULTIOBJ-easy"
    assert BouncingSimMedium.hub_dataset == "bouncingsim/bouncingsim-MULTIOBJ-medium"
    with pytest.raises(UserError, match="reward_mode"):
        get("bouncingsim-easy", reward_mode="partial")


def test_prompt_states_the_polygon_scene(easy):
    task = easy.tasks("test")[0]
    scene = easy.scene(task)
    text = task.prompt_text
    assert f"regular polygon with {scene.container_sides} sides, circumradius 375, centred at (750, 750)" in text
    for i, b in enumerate(scene.bodies, start=1):
        assert f"Ball {i}: regular polygon with {b.sides} sides" in text
        assert f"centre ({int(b.position[0])}, {int(b.position[1])}), velocity ({b.velocity[0]:g}, {b.velocity[1]:g})" in text
    assert "polygon outlines" in text and "never rotate" in text and "No gravity" in text
    assert "predict_position(t)" in text and "`math`" in text and "2 decimals" in text


# --- the official verifier's rules, on concrete answers ---------------------------------------------

def test_program_extraction_follows_the_official_rule():
    assert judge.extract_program("```python\nA\n```\ntext\n```python\nB\n```") == "B"
    assert judge.extract_program("<think>```python\nA\n```</think>no code") == "A"  # the reasoning counts
    assert judge.extract_program("```python\nA\n```\nmention of ``` here") == "A"  # an unpaired fence closes nothing
    assert judge.extract_program("```py\nA\n```") == "py\nA"  # only a `python` tag is dropped
    assert judge.extract_program("```\nA\n```") == "A"
    assert judge.extract_program("```python\n   \n```") is None
    assert judge.extract_program("```python\nA") is None
    assert judge.extract_program("no code") is None


def test_official_verdicts_on_concrete_answers(official_task):
    """Each answer's verdict as the official verifier gives it on this scene (differential check)."""
    env = BouncingSimEasy(train_size=0, test_size=0, workers=2)
    s = OFFICIAL_EASY
    answers = {
        "reference": (_code(reference_program(s)), 15),
        # mean distance 49.9 passes, 50.1 fails, at every timestamp
        "shift 49.9": (_wrapped(s, "def predict_position(t):\n    return [[x + 49.9, y] for x, y in _true(t)]"), 15),
        "shift 50.1": (_wrapped(s, "def predict_position(t):\n    return [[x + 50.1, y] for x, y in _true(t)]"), 0),
        # one ball 150 off: mean 50.007 > 50 at t = 0.1 (positions are rounded to 2 decimals)
        "one ball 150": (_wrapped(s, "def predict_position(t):\n    p = _true(t)\n    p[0] = [p[0][0], p[0][1] + 150]\n    return p"), 0),
        "tuples": (_wrapped(s, "def predict_position(t):\n    return tuple(tuple(p) for p in _true(t))"), 15),
        "extra coordinate": (_wrapped(s, "def predict_position(t):\n    return [[x, y, 0.0] for x, y in _true(t)]"), 15),
        "raises after 1 s": (_wrapped(s, "def predict_position(t):\n    if t > 1.0:\n        raise ValueError('late')\n    return _true(t)"), 10),
        "one ball missing": (_wrapped(s, "def predict_position(t):\n    return _true(t)[:-1]"), 0),
        "time off by 0.05": (_wrapped(s, "def predict_position(t):\n    return _true(t + 0.05)"), 15),
        "time off by 0.1": (_wrapped(s, "def predict_position(t):\n    return _true(t + 0.1)"), 5),
        # the tag's tail stays in the program: "3" is a harmless expression statement, "py" a NameError
        "python3 tag": ("```python3\n" + reference_program(s) + "```", 15),
        "py tag": ("```py\n" + reference_program(s) + "```", 0),
        "state between calls": (_wrapped(s, "CALLS = []\ndef predict_position(t):\n    CALLS.append(t)\n"
                                            "    return _true(t) if len(CALLS) == 1 else []"), 15),
        "numpy": (_code("import numpy\n" + reference_program(s)), 0),
    }
    outcomes = dict(zip(answers, env.score_many([official_task] * len(answers), [a for a, _ in answers.values()])))
    for name, (_, n_pass) in answers.items():
        assert sum(outcomes[name].passed) == n_pass, (name, outcomes[name].feedback)
        assert outcomes[name].reward == float(n_pass == 15)
    assert outcomes["reference"].feedback == ""  # nothing to say when everything passes
    fb = outcomes["one ball 150"].feedback
    assert fb.startswith("0 of 15 tests passed.\n\nTest 1: wrong answer\nmean distance 50.007, allowed 50\n")
    assert "Ball 1: 150.0 away (predicted [722.91, 675.76], true [722.91, 525.77])" in fb
    assert "Hint: some balls are almost exactly right" in fb and "Test 3: wrong answer" in fb and "Test 4" not in fb
    late = outcomes["raises after 1 s"].feedback
    assert late.startswith("10 of 15 tests passed.\nLatest passing time t = 1.00; earliest failing time t = 1.10 (test 11).")
    assert "Test 11: Runtime error" in late and "ValueError: late" in late and "Test 12" not in late
    assert "Input: t = 1.10" in late
    missing = outcomes["one ball missing"].feedback
    assert "Test 1: Runtime error" in missing and "returned 2 positions for 3 balls" in missing
    assert "NameError" in outcomes["py tag"].feedback
    assert "Test 1: Not run" in outcomes["numpy"].feedback and "only math may be imported" in outcomes["numpy"].feedback


def test_wrong_physics_fails_where_the_official_verifier_fails_it():
    """The official medium scene (seed 2002): how many of the 15 tests each wrong model passes there,
    as the official verifier counted them, and the first wrong answer its feedback shows."""
    env = BouncingSimMedium(train_size=0, test_size=0, workers=2)
    task = record_task(scene_record(OFFICIAL_MEDIUM, ground_truth(OFFICIAL_MEDIUM), MEDIUM, 0), "official-medium", "test")
    ref = reference_program(OFFICIAL_MEDIUM)
    answers = {
        "reference": (ref, 15),
        "equal masses": (ref.replace("masses = [polygon_area(shape) for shape in shapes]",
                                     "masses = [1.0 for shape in shapes]"), 9),
        "every ball a hexagon": (ref.replace("shapes = [regular_polygon(s, object_radius) for s in sides]",
                                             "shapes = [regular_polygon(6, object_radius) for s in sides]"), 7),
        "no ball-ball contacts": (ref.replace("for j in range(i + 1, count):", "for j in range(0):"), 8),
        "code only in the reasoning": ("<think>\n```python\n" + ref + "```\n</think>\nDone.", 15),
        "last block is a stub": (ref + "```\nsketch:\n```python\ndef predict_position(t):\n    return []\n", 0),
    }
    completions = [a if a.startswith("<think>") else "```python\n" + a + "```" for a, _ in answers.values()]
    for (name, (_, n_pass)), outcome in zip(answers.items(), env.score_many([task] * len(answers), completions)):
        assert sum(outcome.passed) == n_pass, (name, outcome.feedback)
        if 0 < n_pass < 15:
            assert f"Test {n_pass + 1}: wrong answer" in outcome.feedback
            assert f"earliest failing time t = {TIMESTAMPS[n_pass]:.2f} (test {n_pass + 1})" in outcome.feedback
    assert "Test 1: Runtime error" in outcome.feedback  # the stub returns [] (no positions)


def test_format_failures_and_timeouts(official_task):
    env = BouncingSimEasy(train_size=0, test_size=0)
    none = env.score(official_task, "The balls end up near the middle.")
    assert none.reward == 0.0 and none.feedback.startswith("No program found") and none.details["error"] == "format"
    cut = env.score(official_task, "Here:\n```python\ndef predict_position(t):\n    return [")
    assert cut.details["error"] == "format"
    syntax = env.score(official_task, _code("def predict_position(t)\n    return 1"))
    assert syntax.details["error"] == "syntax" and "Test 1: Not run\nSyntaxError" in syntax.feedback
    slow = env.score(official_task, _code("def predict_position(t):\n    while t > 1.35:\n        pass\n"
                                          + "    return " + repr([list(p) for p in OFFICIAL_EASY_TRUTH[0]])))
    assert slow.passed[13:] == [False, False] and "Test 14: Time limit exceeded" in slow.feedback


# --- feedback rules (pure) ---------------------------------------------------------------------------

def _checks(distances: list[float | None], t0: float = 0.1) -> list[judge.Check]:
    out = []
    for i, d in enumerate(distances):
        t = round(t0 + 0.1 * i, 2)
        if d is None:
            out.append(judge.Check(t=t, expected=((0.0, 0.0),), tolerance=50.0, passed=False, problem="error: boom"))
        else:
            out.append(judge.Check(t=t, expected=((0.0, 0.0),), tolerance=50.0, passed=d <= 50, distance=d,
                                   predicted=((d, 0.0),)))
    return out


def test_feedback_shows_a_crash_alone_else_three_wrong_answers_and_grows_only_past_double():
    wrong = judge.feedback_text(_checks([10, 60, 70, 130, 200]))
    assert wrong.count(": wrong answer") == 3 and "Test 2:" in wrong and "Test 5" not in wrong
    assert "The error grows with time (mean distance 60 at t = 0.20, 200 at t = 0.50)" in wrong
    assert "grows" not in judge.feedback_text(_checks([60, 70, 110]))  # 110 is not over twice 60
    crash = judge.feedback_text(_checks([60, None, 70]))
    assert "Test 2: Runtime error\nboom" in crash and "wrong answer" not in crash
    assert judge.feedback_text(_checks([1, 2, 3])) == ""
    assert len(judge.feedback_text(_checks([1000.0] * 15))) <= 2000


def test_generated_records_come_back_from_the_cache_and_a_bad_entry_is_drawn_again(tmp_path, monkeypatch):
    import json

    from resd.envs.bouncing.scene import EASY
    from resd.envs.bouncingsim import generated_records

    monkeypatch.setenv("RESD_CACHE_DIR", str(tmp_path))
    first = generated_records(EASY, "train", 7, 3)
    (entry,) = (tmp_path / "bouncingsim").glob("*-train-7-3-*.jsonl")
    # The cache is what a second call reads: a marked copy comes back as it is.
    marked = [{**r, "marker": i} for i, r in enumerate(first)]
    entry.write_text("".join(json.dumps(r) + "\n" for r in marked))
    assert generated_records(EASY, "train", 7, 3) == marked
    # A short, damaged or foreign entry is a miss: the scenes are drawn again, the same as before.
    for bad in ("", '{"id": "G_1_1"}\n', "not json\n" * 3, "".join(json.dumps({**r, "id": "x"}) + "\n" for r in first)):
        entry.write_text(bad)
        assert generated_records(EASY, "train", 7, 3) == first
    # Another size or seed is another entry.
    assert generated_records(EASY, "train", 7, 2) == first[:2]
    assert len(list((tmp_path / "bouncingsim").glob("*.jsonl"))) == 2
