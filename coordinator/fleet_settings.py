"""Per-fleet settings the signed index carries besides its targets: the variant rules of each
model (which build a device picks) and the fleet configuration (settings by selector)."""

from __future__ import annotations

import json
import time
from typing import Any

import protocol

from .db import Store
from .errors import RegistryError


class FleetSettingsStore(Store):
    # --- variant rules -------------------------------------------------------------------
    def set_variant_rules(
        self,
        fleet: str,
        name: str,
        rules: list[protocol.VariantRule],
        default: str | None,
    ) -> None:
        """How devices pick among the variants of ``name``'s releases: the first rule that
        holds, else ``default`` (None: the first variant by name)."""
        with self._db.lock:
            self._db.sql.table("variant_rules").upsert(
                {
                    "fleet": fleet,
                    "name": name,
                    "rules": json.dumps([r.to_dict() for r in rules]),
                    "default_variant": default,
                },
                pk=("fleet", "name"),
            )

    def variant_rules_snapshot(self, fleet: str) -> dict[str, str]:
        """Every model's variant rules as stored (to notice a change cheaply)."""
        with self._db.lock:
            rows = list(self._db.sql.table("variant_rules").rows_where("fleet = ?", [fleet]))
        return {r["name"]: f"{r['rules']} {r['default_variant']}" for r in rows}

    def variant_rules(
        self, fleet: str, name: str
    ) -> tuple[tuple[protocol.VariantRule, ...], str | None]:
        with self._db.lock:
            rows = list(
                self._db.sql.table("variant_rules").rows_where(
                    "fleet = ? AND name = ?", [fleet, name]
                )
            )
        if not rows:
            return (), None
        rules = protocol.rules_from_list(json.loads(rows[0]["rules"]), "stored variant rules")
        return rules, rows[0]["default_variant"]

    # --- fleet configuration -------------------------------------------------------------
    def set_config(self, fleet: str, select: protocol.Selector, settings: dict[str, Any]) -> None:
        """Merge ``settings`` into the configuration entry of ``select`` (made if new; it then
        comes last, so it overrides earlier entries on the devices both select)."""
        key = json.dumps(select.to_dict(), sort_keys=True)
        conn = self._db.sql.conn
        with self._db.lock, conn:
            row = conn.execute(
                "SELECT settings FROM fleet_config WHERE fleet = ? AND selector = ?", [fleet, key]
            ).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **settings}
            if row is None:
                count = conn.execute(
                    "SELECT count(*) FROM fleet_config WHERE fleet = ?", [fleet]
                ).fetchone()[0]
                if count >= protocol.DEFAULT_LIMITS.max_config_entries:
                    raise RegistryError(
                        f"fleet {fleet} has {count} configuration entries already (one per "
                        "selector); reuse a selector"
                    )
            conn.execute(
                "INSERT INTO fleet_config (fleet, selector, settings, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (fleet, selector) DO UPDATE SET settings = excluded.settings",
                [fleet, key, json.dumps(merged, sort_keys=True), time.time()],
            )

    def config_entries(self, fleet: str) -> tuple[protocol.ConfigEntry, ...]:
        """The fleet configuration, oldest entry first (as the index carries it)."""
        with self._db.lock:
            rows = list(
                self._db.sql.table("fleet_config").rows_where(
                    "fleet = ?", [fleet], order_by="updated, selector"
                )
            )
        return tuple(
            protocol.ConfigEntry(
                protocol.Selector.from_dict(json.loads(r["selector"]), "stored config"),
                json.loads(r["settings"]),
            )
            for r in rows
        )
