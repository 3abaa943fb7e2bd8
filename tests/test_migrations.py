"""The alembic migrations and the SQLModel models never disagree, on either backend."""

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from controlplane.db import downgrade, make_engine, upgrade


def test_upgrade_matches_models_and_downgrade_empties(empty_database_url):
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, SQLModel.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())

        downgrade(empty_database_url)
        engine.dispose()
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(empty_database_url)  # and back up again: the chain is repeatable
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_edge_overlap_migration_keeps_the_rows_of_a_populated_database(empty_database_url):
    before = "5e6f7a8b9c0d"
    upgrade(empty_database_url, before)
    engine = make_engine(empty_database_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = (
        "INSERT INTO device_class (id, name, vendor, bf16_tflops, memory_gib, memory_gbps, fabric, usd_per_hour,"
        " slices_per_device, price_source, cores, created_at) VALUES"
        " (1, 'H100-SXM', 'nvidia', 989, 80, 3350, 'nvlink', 3.9, 7, '', 0, :at),"
        " (2, 'CPU-EPYC-64C', 'amd', 12.7, 256, 307, 'ethernet', 3.7, 8, '', 64, :at)",
        "INSERT INTO node (id, name, device_class_id, device_count, healthy, created_at) VALUES (1, 'h100-0', 1, 8, true, :at)",
        "INSERT INTO tenant (id, name, display_name, created_at) VALUES (1, 'acme', '', :at)",
        "INSERT INTO workload (id, tenant_id, name, description, created_at) VALUES (1, 1, 'bot', '', :at)",
        "INSERT INTO fragment (id, workload_id, key, kind, name, model, first_seen, last_seen) VALUES"
        " (1, 1, 'agent:a', 'agent', 'a', '', :at, :at), (2, 1, 'tool:t', 'tool', 't', '', :at, :at)",
        "INSERT INTO edge (id, workload_id, parent_id, child_id, calls, bytes_total) VALUES (1, 1, 1, 2, 300, 9000)",
    )
    try:
        with engine.begin() as conn:
            for statement in rows:
                conn.execute(text(statement), {"at": at})

        upgrade(empty_database_url)
        with engine.begin() as conn:
            # Existing edges have no overlap or visits tallied; CPU classes are sold by the slice, as the catalog seeds.
            assert tuple(conn.execute(text("SELECT calls, bytes_total, calls_overlapping FROM edge")).one()) == (300, 9000, 0)
            assert {name: bool(flag) for name, flag in conn.execute(text("SELECT name, sold_by_slice FROM device_class"))} == {
                "H100-SXM": False, "CPU-EPYC-64C": True}
            conn.execute(text("INSERT INTO edge_visit_calls (edge_id, calls, visits) VALUES (1, 3, 100)"))

        downgrade(empty_database_url, before)
        engine.dispose()
        with engine.connect() as conn:
            assert tuple(conn.execute(text("SELECT calls, bytes_total FROM edge")).one()) == (300, 9000)
            assert conn.execute(text("SELECT count(*) FROM device_class")).scalar() == 2
            assert conn.execute(text("SELECT count(*) FROM node")).scalar() == 1
        assert "edge_visit_calls" not in inspect(engine).get_table_names()
        assert "sold_by_slice" not in {c["name"] for c in inspect(engine).get_columns("device_class")}
    finally:
        engine.dispose()


def test_health_owner_migration_keeps_a_stored_unhealthy_node_and_device_unhealthy(empty_database_url):
    before = "795ee9d5df21"
    upgrade(empty_database_url, before)
    engine = make_engine(empty_database_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = (
        "INSERT INTO device_class (id, name, vendor, bf16_tflops, memory_gib, memory_gbps, fabric, usd_per_hour,"
        " slices_per_device, price_source, cores, sold_by_slice, created_at) VALUES"
        " (1, 'H100-SXM', 'nvidia', 989, 80, 3350, 'nvlink', 3.9, 7, '', 0, false, :at)",
        "INSERT INTO node (id, name, device_class_id, device_count, healthy, created_at) VALUES"
        " (1, 'h100-0', 1, 8, true, :at), (2, 'h100-1', 1, 8, false, :at)",
        "INSERT INTO device (id, node_id, index, healthy, xid_errors) VALUES"
        " (1, 1, 0, true, 0), (2, 1, 1, false, 0), (3, 1, 2, false, 79)",
    )
    try:
        with engine.begin() as conn:
            for statement in rows:
                conn.execute(text(statement.replace(" index,", ' "index",')), {"at": at})
        upgrade(empty_database_url)
        with engine.connect() as conn:
            # The unhealthy node is read as an operator's cordon; a device unhealthy without an XID as not ready.
            assert {n: (bool(r), bool(c), bool(h)) for n, r, c, h in
                    conn.execute(text("SELECT name, ready, cordoned, healthy FROM node"))} == {
                "h100-0": (True, False, True), "h100-1": (True, True, False)}
            assert {i: (bool(r), x, bool(h)) for i, r, x, h in
                    conn.execute(text('SELECT "index", ready, xid_errors, healthy FROM device'))} == {
                0: (True, 0, True), 1: (False, 0, False), 2: (True, 79, False)}
        downgrade(empty_database_url, before)
        engine.dispose()
        assert "cordoned" not in {c["name"] for c in inspect(engine).get_columns("node")}
    finally:
        engine.dispose()


def test_rollback_migration_backfills_applied_at_of_applied_placements_only(empty_database_url):
    before = "795ee9d5df21"
    upgrade(empty_database_url, before)
    engine = make_engine(empty_database_url)
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO placement (id, version, state, created_at, usd_per_hour, solver_status,"
                              " solve_time_s, reason) VALUES (1, 1, 'applied', :at, 1, '', 0, ''),"
                              " (2, 2, 'proposed', :at, 1, '', 0, '')"), {"at": at})
        upgrade(empty_database_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version, applied_at, decided_by FROM placement ORDER BY version")).all()
        # Until now created_at was rewritten when a placement was applied: it is when an applied one came into force.
        assert [(v, a is not None, d) for v, a, d in rows] == [(1, True, None), (2, False, None)]
        assert str(rows[0][1]).startswith("2026-01-01 12:00:00")
        downgrade(empty_database_url, before)
        engine.dispose()
        assert "fragment_pin" not in inspect(engine).get_table_names()
        assert "applied_at" not in {c["name"] for c in inspect(engine).get_columns("placement")}
    finally:
        engine.dispose()


def test_policy_names_migration_gives_workload_policies_their_tenant_and_names_per_tenant(empty_database_url):
    before = "c9ccb5dc0797"
    upgrade(empty_database_url, before)
    engine = make_engine(empty_database_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    columns = ("name, tenant_id, workload_id, min_improvement_pct, cooldown_s, max_moves_per_cycle, approval_required,"
               " dry_run, enabled, created_at, updated_at")

    def policy(conn, name, tenant_id=None, workload_id=None):
        conn.execute(text(f"INSERT INTO migration_policy ({columns}) VALUES (:name, :tenant, :workload, 5, 300, 10,"
                          " false, false, true, :at, :at)"), {"name": name, "tenant": tenant_id, "workload": workload_id,
                                                               "at": at})
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenant (id, name, display_name, created_at) VALUES (1, 'acme', '', :at),"
                              " (2, 'globex', '', :at)"), {"at": at})
            conn.execute(text("INSERT INTO workload (id, tenant_id, name, description, created_at) VALUES"
                              " (1, 2, 'docs', '', :at)"), {"at": at})
            policy(conn, "nightly", tenant_id=1)
            policy(conn, "docs-hold", workload_id=1)  # a workload's policy, stored without its tenant until now
            policy(conn, "fleet")

        upgrade(empty_database_url)
        with engine.begin() as conn:
            owners = dict(conn.execute(text("SELECT name, tenant_id FROM migration_policy")).all())
            assert owners == {"nightly": 1, "docs-hold": 2, "fleet": None}
            policy(conn, "nightly", tenant_id=2)  # another tenant may now use the same name
        for name, tenant_id, workload_id in (("nightly", 1, None), ("fleet", None, None), ("docs-hold", 2, 1)):
            with pytest.raises(IntegrityError), engine.begin() as conn:  # ... but none twice in one scope
                policy(conn, name, tenant_id, workload_id)

        with engine.begin() as conn:
            conn.execute(text("DELETE FROM migration_policy WHERE tenant_id = 2 AND name = 'nightly'"))
        downgrade(empty_database_url, before)  # names unique across the fleet again, as they are now
        engine.dispose()
        assert "console_session" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_device_calibration_migration_keeps_the_classes_and_one_calibration_per_class(empty_database_url):
    before = "d2e3f4a5b6c7"
    upgrade(empty_database_url, before)
    engine = make_engine(empty_database_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    calibration = ("INSERT INTO device_calibration (device_class_id, float32_gflops, bfloat16_gflops, float16_gflops,"
                   " copy_gbps, float32_efficiency, bfloat16_efficiency, float16_efficiency, memory_efficiency, threads,"
                   " source, measured_at, updated_at) VALUES (1, 90, 200, 4, 25, 0.9, 1.0, 0.02, 0.5, 1, 'test', :at, :at)")
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO device_class (id, name, vendor, bf16_tflops, memory_gib, memory_gbps, fabric,"
                              " usd_per_hour, slices_per_device, price_source, cores, sold_by_slice, created_at) VALUES"
                              " (1, 'CPU-EPYC-64C', 'amd', 12.7, 256, 307, 'ethernet', 3.7, 8, '', 64, true, :at)"),
                         {"at": at})
        upgrade(empty_database_url)
        with engine.begin() as conn:
            conn.execute(text(calibration), {"at": at})
        with pytest.raises(IntegrityError), engine.begin() as conn:  # the latest calibration replaces, never adds
            conn.execute(text(calibration), {"at": at})
        with engine.connect() as conn:
            assert conn.execute(text("SELECT bfloat16_efficiency, source FROM device_calibration")).one() == (1.0, "test")
        downgrade(empty_database_url, before)
        engine.dispose()
        assert "device_calibration" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM device_class")).scalar() == 1
    finally:
        engine.dispose()
