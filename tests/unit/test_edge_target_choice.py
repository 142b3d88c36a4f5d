"""The edge's target chooser on plain data: every way a choice ends, model by model."""

from __future__ import annotations

from dataclasses import replace

from edge_node.target_choice import (
    AbandonDownload,
    CancelDownload,
    DropPending,
    Facts,
    FetchManifest,
    ForgetDeferred,
    HeldBack,
    HeldByPin,
    RefuseDowngrade,
    ReleaseRef,
    RollBack,
    choose,
)
from protocol import Target


def target(version: int, *, name: str = "m", rollback: bool = False, variant: str = "") -> Target:
    mid = f"{name}@{version}{variant}".encode().ljust(32, b".")
    return Target(version, mid, rollback, variant=variant or None)


def ref(version: int, *, name: str = "m") -> ReleaseRef:
    return ReleaseRef(name, version, target(version, name=name).manifest_id)


M2, M3, M4 = target(2), target(3), target(4)


# --- fetching ---------------------------------------------------------------------------
def test_a_new_target_has_its_manifest_fetched() -> None:
    assert choose(Facts({"m": M3}, active={"m": 2})) == (FetchManifest("m", M3),)


def test_a_first_model_is_fetched_with_nothing_active() -> None:
    assert choose(Facts({"m": M2})) == (FetchManifest("m", M2),)


def test_one_release_is_fetched_at_a_time_in_name_order() -> None:
    a, b = target(1, name="a"), target(1, name="b")
    assert choose(Facts({"b": b, "a": a})) == (FetchManifest("a", a),)


def test_no_target_for_this_device_is_nothing() -> None:
    assert choose(Facts({"m": None}, active={"m": 2})) == ()


def test_nothing_to_do_is_nothing() -> None:
    assert choose(Facts({})) == ()


# --- already there ----------------------------------------------------------------------
def test_the_active_version_needs_nothing() -> None:
    assert choose(Facts({"m": M3}, active={"m": 3})) == ()


def test_a_downgrade_is_refused_and_reported_once() -> None:
    facts = Facts({"m": M2}, active={"m": 3})
    assert choose(facts) == (RefuseDowngrade("m", 2, 3, M2.manifest_id),)
    assert choose(replace(facts, told={M2.manifest_id})) == ()


def test_a_verified_release_waiting_for_its_window_needs_nothing() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, deferred=ref(3))
    assert choose(facts) == ()
    # another target of the model is fetched; the deferred one stays (it is older)
    assert choose(replace(facts, targets={"m": M4})) == (FetchManifest("m", M4),)


# --- rollback ---------------------------------------------------------------------------
def test_a_rollback_target_below_the_active_version_rolls_back_once() -> None:
    back = target(2, rollback=True)
    facts = Facts({"m": back}, active={"m": 3})
    assert choose(facts) == (RollBack("m", 2, back.manifest_id),)
    assert choose(replace(facts, rollback_tried={back.manifest_id})) == ()


def test_a_rollback_target_at_the_active_version_is_nothing() -> None:
    assert choose(Facts({"m": target(3, rollback=True)}, active={"m": 3})) == ()


def test_a_rollback_target_above_the_active_version_is_fetched() -> None:
    up = target(4, rollback=True)
    assert choose(Facts({"m": up}, active={"m": 3})) == (FetchManifest("m", up),)


def test_a_rollback_target_drops_a_newer_deferred_release() -> None:
    back = target(2, rollback=True)
    facts = Facts({"m": back}, active={"m": 3}, deferred=ref(4))
    assert choose(facts) == (ForgetDeferred("m"), RollBack("m", 2, back.manifest_id))


# --- never again ------------------------------------------------------------------------
def test_a_release_that_failed_to_activate_is_not_tried_again() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, failed=(M3.manifest_id.hex(),))
    assert choose(facts) == ()
    # the next model is still considered
    other = target(1, name="n")
    assert choose(replace(facts, targets={"m": M3, "n": other})) == (FetchManifest("n", other),)


def test_a_version_rolled_back_from_is_held_back_and_reported_once() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, held_back={"m": 3})
    assert choose(facts) == (HeldBack("m", 3, M3.manifest_id),)
    assert choose(replace(facts, told={M3.manifest_id})) == ()
    # a newer release is taken
    assert choose(replace(facts, targets={"m": M4})) == (FetchManifest("m", M4),)


# --- pins -------------------------------------------------------------------------------
def test_a_pin_holds_the_model_and_is_reported_once() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, pins={"m": 2})
    assert choose(facts) == (HeldByPin("m", 3, 2, M3.manifest_id),)
    assert choose(replace(facts, told={M3.manifest_id})) == ()


def test_a_pin_below_the_target_holds_it_too() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, pins={"m": 4})
    assert choose(facts) == (HeldByPin("m", 3, 4, M3.manifest_id),)


def test_the_pinned_version_is_fetched() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, pins={"m": 3})
    assert choose(facts) == (FetchManifest("m", M3),)


def test_a_pin_cancels_a_download_of_another_version() -> None:
    facts = Facts({"m": M4}, active={"m": 2}, pins={"m": 2}, download=ref(3))
    assert choose(facts) == (HeldByPin("m", 4, 2, M4.manifest_id), CancelDownload("m"))


# --- no longer targeted -----------------------------------------------------------------
def test_no_target_cancels_the_download_the_deferred_and_the_pending_manifest() -> None:
    facts = Facts({"m": None}, download=ref(4), deferred=ref(3), pending=("m", M4))
    assert choose(facts) == (CancelDownload("m"), ForgetDeferred("m"), DropPending("m", M4))


def test_a_lower_target_cancels_what_is_above_it_only() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, download=ref(4), deferred=ref(3))
    assert choose(facts) == (CancelDownload("m"),)  # the deferred m@3 is the target


def test_cancel_above_leaves_other_models_alone() -> None:
    facts = Facts({"m": None}, download=ref(4, name="n"), pending=("n", target(4, name="n")))
    assert choose(facts) == ()


def test_a_pending_manifest_above_the_target_is_dropped_and_the_target_fetched() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, pending=("m", M4))
    assert choose(facts) == (DropPending("m", M4), FetchManifest("m", M3))


# --- one download at a time -------------------------------------------------------------
def test_another_models_download_makes_this_one_wait_its_turn() -> None:
    other = ref(1, name="a")
    facts = Facts({"m": M3}, active={"m": 2}, download=other)
    assert choose(facts) == ()


def test_waiting_for_a_turn_does_not_end_the_choice() -> None:
    z2 = target(2, name="z")
    facts = Facts({"m": M3, "z": z2}, active={"m": 2, "z": 3}, download=ref(1, name="a"))
    assert choose(facts) == (RefuseDowngrade("z", 2, 3, z2.manifest_id),)


def test_the_release_downloading_changes_nothing_and_ends_the_choice() -> None:
    # (were the choice to go on, the downgrade of z would be reported)
    facts = Facts({"m": M3, "z": target(2, name="z")}, active={"m": 2, "z": 3}, download=ref(3))
    assert choose(facts) == ()


def test_an_older_target_than_the_download_changes_nothing() -> None:
    # the same version, another variant: not newer than what is downloading
    same_version = target(3, variant="int8")
    facts = Facts({"m": same_version}, active={"m": 2}, download=ref(3))
    assert choose(facts) == ()


def test_a_newer_target_abandons_the_older_download() -> None:
    facts = Facts({"m": M4}, active={"m": 2}, download=ref(3))
    assert choose(facts) == (AbandonDownload("m", 4), FetchManifest("m", M4))


def test_a_cancelled_download_frees_the_turn_for_the_next_model() -> None:
    other = target(1, name="n")
    facts = Facts({"m": None, "n": other}, download=ref(3))
    assert choose(facts) == (CancelDownload("m"), FetchManifest("n", other))


# --- the awaited manifest ---------------------------------------------------------------
def test_the_manifest_already_awaited_changes_nothing() -> None:
    facts = Facts({"m": M3}, active={"m": 2}, pending=("m", M3))
    assert choose(facts) == ()


def test_a_new_target_replaces_the_awaited_manifest() -> None:
    facts = Facts({"m": M4}, active={"m": 2}, pending=("m", M3))
    assert choose(facts) == (DropPending("m", M3), FetchManifest("m", M4))


def test_an_awaited_manifest_of_another_model_is_replaced() -> None:
    b = target(1, name="b")
    facts = Facts({"a": target(1, name="a"), "b": b}, active={"a": 1}, pending=("c", M3))
    assert choose(facts) == (DropPending("c", M3), FetchManifest("b", b))


def test_the_facts_given_are_not_changed() -> None:
    facts = Facts({"m": M4}, active={"m": 2}, download=ref(3), pending=("m", M3))
    before = replace(facts)
    choose(facts)
    assert facts == before


# --- repairing a corrupt active file --------------------------------------------------------
def test_the_active_version_whose_file_is_corrupt_is_fetched_again() -> None:
    facts = Facts({"m": M3}, active={"m": 3}, repairs={"m": 3})
    assert choose(facts) == (FetchManifest("m", M3),)
    # while it is fetched, nothing more; once repaired (no longer corrupt), nothing at all
    assert choose(replace(facts, pending=("m", M3))) == ()
    assert choose(replace(facts, repairs={})) == ()


def test_a_repair_is_never_a_downgrade() -> None:
    # the index targets an older version: refused as ever, whatever the active file's state
    facts = Facts({"m": M2}, active={"m": 3}, repairs={"m": 3})
    assert choose(facts) == (RefuseDowngrade("m", 2, 3, M2.manifest_id),)
    back = target(2, rollback=True)
    assert choose(replace(facts, targets={"m": back})) == (RollBack("m", 2, back.manifest_id),)
    # a repair record of another version than the active one asks for nothing
    assert choose(Facts({"m": M3}, active={"m": 3}, repairs={"m": 2})) == ()


def test_a_newer_target_replaces_a_corrupt_file_instead_of_repairing_it() -> None:
    facts = Facts({"m": M4}, active={"m": 3}, repairs={"m": 3})
    assert choose(facts) == (FetchManifest("m", M4),)


def test_a_repair_that_failed_to_activate_is_not_tried_again() -> None:
    facts = Facts({"m": M3}, active={"m": 3}, repairs={"m": 3}, failed={M3.manifest_id.hex()})
    assert choose(facts) == ()


def test_a_repair_waits_for_the_download_of_another_model() -> None:
    a = target(1, name="a")
    facts = Facts({"a": a, "m": M3}, active={"m": 3}, repairs={"m": 3}, download=ref(1, name="a"))
    assert choose(facts) == ()
    assert choose(replace(facts, download=None)) == (FetchManifest("a", a),)
    assert choose(replace(facts, download=None, active={"a": 1, "m": 3})) == (
        FetchManifest("m", M3),
    )
