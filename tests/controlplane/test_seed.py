"""The device catalog is seeded on first start, and a restart keeps what operators changed."""

from sqlmodel import Session, select

from controlplane.models import DeviceClass
from controlplane.runtime import prepare_database
from controlplane.settings import Settings
from optimizer.catalog import CATALOG


def test_first_start_seeds_the_catalog_and_restarts_keep_edits(tmp_path):
    from controlplane.db import make_engine

    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings.effective_database_url)
    prepare_database(engine, settings)  # migrations, then the catalog
    with Session(engine) as session:
        rows = {row.name: row for row in session.exec(select(DeviceClass)).all()}
        assert set(rows) == {spec.name for spec in CATALOG}
        assert rows["H100-SXM"].price_source and rows["CPU-EPYC-64C"].cores > 0
        # CPU cores are rented by the core; GPUs cost their whole price once any replica is on them.
        assert {name for name, row in rows.items() if row.sold_by_slice} == {"CPU-EPYC-64C"}
        rows["L40S"].usd_per_hour = 1.23  # an operator's negotiated price
        session.commit()
    prepare_database(engine, settings)
    with Session(engine) as session:
        rows = {row.name: row for row in session.exec(select(DeviceClass)).all()}
    assert len(rows) == len(CATALOG) and rows["L40S"].usd_per_hour == 1.23
    engine.dispose()
