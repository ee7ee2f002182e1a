"""Meta-World v3 task list, hand-written instructions, MT10 and the difficulty groups.

Kept free of simulator imports so that listing tasks and suites works without the ``sim`` extra.
Difficulty groups: Seo et al. 2022 (Masked World Models), as reported by SmolVLA and LeRobot.
"""

from __future__ import annotations

from vlastack.errors import ConfigError

# Hand-written instructions (one per task, all distinct). Phrased as a person would ask a robot.
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the ring and put it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "pick up the puck from the left bin and place it into the right bin",
    "box-close-v3": "pick up the lid and close the box with it",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "reach over the wall and press the button from the top",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "reach past the wall and press the button from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "lift the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the knob down",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the knob",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "turn the faucet handle to close the faucet",
    "faucet-open-v3": "turn the faucet handle to open the faucet",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "hand-insert-v3": "move the block into the hole in the table",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "pick up the peg and insert it sideways into the hole",
    "peg-unplug-side-v3": "unplug the peg from the side of the box",
    "pick-out-of-hole-v3": "pick the peg out of the hole and lift it to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck, lift it over the wall and place it at the goal",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "push the puck backwards to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "reach-v3": "reach the goal position with the gripper",
    "reach-wall-v3": "reach over the wall to the goal position",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "grasp the stick and use it to pull the box to the goal",
    "stick-push-v3": "grasp the stick and use it to push the box to the goal",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "slide the window closed",
    "window-open-v3": "slide the window open",
}
TASKS: list[str] = sorted(INSTRUCTIONS)

# MT10 as defined by metaworld.env_dict.MT10_V3 (kept here so listing needs no simulator).
MT10: list[str] = [
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
]

# Difficulty groups of Seo et al. 2022 ("Masked World Models"), the split SmolVLA and LeRobot's
# metaworld env report (easy 28, medium 11, hard 6, very hard 5).
DIFFICULTY: dict[str, list[str]] = {
    "easy": [
        f"{t}-v3"
        for t in [
            "button-press",
            "button-press-topdown",
            "button-press-topdown-wall",
            "button-press-wall",
            "coffee-button",
            "dial-turn",
            "door-close",
            "door-lock",
            "door-open",
            "door-unlock",
            "drawer-close",
            "drawer-open",
            "faucet-close",
            "faucet-open",
            "handle-press",
            "handle-press-side",
            "handle-pull",
            "handle-pull-side",
            "lever-pull",
            "plate-slide",
            "plate-slide-back",
            "plate-slide-back-side",
            "plate-slide-side",
            "reach",
            "reach-wall",
            "window-close",
            "window-open",
            "peg-unplug-side",
        ]
    ],
    "medium": [
        f"{t}-v3"
        for t in [
            "basketball",
            "bin-picking",
            "box-close",
            "coffee-pull",
            "coffee-push",
            "hammer",
            "peg-insert-side",
            "push-wall",
            "soccer",
            "sweep",
            "sweep-into",
        ]
    ],
    "hard": [
        f"{t}-v3"
        for t in ["assembly", "hand-insert", "pick-out-of-hole", "pick-place", "push", "push-back"]
    ],
    "very_hard": [
        f"{t}-v3"
        for t in ["shelf-place", "disassemble", "stick-pull", "stick-push", "pick-place-wall"]
    ],
}


def difficulty_of(task: str) -> str:
    """Difficulty group ('easy', 'medium', 'hard', 'very_hard') of a Meta-World task name."""
    name = task.removeprefix("metaworld/")
    for group, names in DIFFICULTY.items():
        if name in names:
            return group
    raise ConfigError(f"'{task}' is not a Meta-World v3 task; see `vlastack list envs`")
