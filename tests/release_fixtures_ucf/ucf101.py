"""A small UCF-101 tree: UCF-101/<Class>/v_<Class>_gGG_cCC.avi (Xvid in AVI, 25 fps, no audio), the full
101-line classInd.txt and the three official splits' lists for the clips made (CRLF), HandstandPushups'
files spelt `v_HandStandPushups_*` as released, and optionally a TV-L1-style flow release whose folders are
spelt `v_HandstandPushups_*` as in that release."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from bml.data.flow import flow_frame_name, quantise_flow

from . import encode_segments, undecodable, write_lines

# classInd.txt of the release, in its order (1-based number = position + 1).
CLASS_IND = """ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball
BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling BoxingPunchingBag
BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling CricketShot CuttingInKitchen Diving
Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch FrontCrawl GolfSwing Haircut Hammering HammerThrow
HandstandPushups HandstandWalking HeadMassage HighJump HorseRace HorseRiding HulaHoop IceDancing JavelinThrow
JugglingBalls JumpingJack JumpRope Kayaking Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks
ParallelBars PizzaTossing PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar
PlayingTabla PlayingViolin PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor RopeClimbing Rowing
SalsaSpin ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty StillRings
SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus TrampolineJumping Typing UnevenBars
VolleyballSpiking WalkingWithDog WallPushups WritingOnBoard YoYo""".split()
FILE_SPELLING = {"HandstandPushups": "HandStandPushups"}  # the release's file names for this folder
FLOW_SPELLING = {"HandStandPushups": "HandstandPushups"}  # the flow release's folder names for those files
FIXTURE_CLASSES = ("ApplyEyeMakeup", "Hammering", "HammerThrow", "HandstandPushups", "YoYo")
GROUPS = (1, 8, 15, 22, 23)  # split N tests on groups 7N-6..7N: one test group per split, 22-23 always train
FPS = 25  # UCF-101's frame rate
FLOW_UV = (2.0, -1.0)  # pixels: the constant flow written into the fixture's flow release
BROKEN = {  # case -> the clip (file stem) of the trainlist01.txt line that shows it
    "undecodable": "v_ApplyEyeMakeup_g08_c09",  # garbage bytes (listing keeps it; extraction's probe rejects it)
    "missing": "v_YoYo_g08_c09",  # listed, no file
    "unknown_class": "v_MoonWalking_g08_c01",  # folder and file exist, class not in classInd.txt
    "empty": "v_Hammering_g08_c09",  # 0 bytes
    "flow_missing": "v_YoYo_g22_c01",  # a good clip whose flow folders are absent (with_flow only)
}


def clip_name(cls: str, group: int, clip: int) -> str:
    return f"v_{FILE_SPELLING.get(cls, cls)}_g{group:02d}_c{clip:02d}"


def groups_tested(split: int) -> range:
    """The groups that split N tests on (the official splits: 7N-6..7N)."""
    return range(7 * split - 6, 7 * split + 1)


def make_tree(
    root: Path,
    classes: Sequence[str] = FIXTURE_CLASSES,
    groups: Sequence[int] = GROUPS,
    clips_per_group: int = 2,
    seconds: int = 1,
    with_flow: bool = False,
    broken: Iterable[str] = (),
    crlf: bool = True,
) -> Path:
    """Write the tree under root; returns root."""
    broken = set(broken)
    if broken - set(BROKEN):
        raise ValueError(f"unknown broken cases {sorted(broken - set(BROKEN))}; choose from {sorted(BROKEN)}")
    clips = [(cls, g, c) for cls in classes for g in groups for c in range(1, clips_per_group + 1)]
    videos = root / "UCF-101"
    encode_segments(
        [videos / cls / f"{clip_name(cls, g, c)}.avi" for cls, g, c in clips],
        seconds,
        video=["-c:v", "libxvid", "-q:v", "5"],
        audio=None,
        fps=FPS,
    )

    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(CLASS_IND)], crlf)
    extra_train = []
    for case in sorted(broken - {"flow_missing"}):
        stem = BROKEN[case]
        cls = re.match(r"v_([A-Za-z]+)_g", stem).group(1)
        number = CLASS_IND.index(cls) + 1 if cls in CLASS_IND else len(CLASS_IND) + 1
        extra_train.append(f"{cls}/{stem}.avi {number}")
        if case in ("undecodable", "unknown_class"):
            undecodable(videos / cls / f"{stem}.avi")
        elif case == "empty":
            (videos / cls / f"{stem}.avi").write_bytes(b"")
    for split in (1, 2, 3):
        train = [
            f"{cls}/{clip_name(cls, g, c)}.avi {CLASS_IND.index(cls) + 1}"
            for cls, g, c in clips
            if g not in groups_tested(split)
        ]
        test = [f"{cls}/{clip_name(cls, g, c)}.avi" for cls, g, c in clips if g in groups_tested(split)]
        write_lines(lists / f"trainlist0{split}.txt", train + (extra_train if split == 1 else []), crlf)
        write_lines(lists / f"testlist0{split}.txt", test, crlf)

    if with_flow:
        u, v = (quantise_flow(np.full((12, 16), value, np.float32)) for value in FLOW_UV)
        for cls, g, c in clips:
            name = clip_name(cls, g, c)
            if "flow_missing" in broken and name == BROKEN["flow_missing"]:
                continue
            for part, image in (("u", u), ("v", v)):
                folder = root / "tvl1_flow" / part / "_".join(FLOW_SPELLING.get(t, t) for t in name.split("_"))
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(1, FPS * seconds):  # N frames give N - 1 flow frames, numbered from 1
                    cv2.imwrite(str(folder / flow_frame_name(k)), image)
    return root
