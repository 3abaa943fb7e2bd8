"""The Fleet page: per class capacity in GPUs for everyone; nodes and devices with health and DCGM
readings for fleet-wide users only."""

from datetime import timedelta

from sqlmodel import Session

from controlplane.models import DeviceTelemetry
from tests.web.conftest import NOW, sign_in


def device_row(page: str, node: str, index: int) -> str:
    table = page.split(f'id="node-{node}"')[1].split("</table>")[0]
    return table.split(f'<tr><td class="num">{index}</td>')[1].split("</tr>")[0]


def test_classes_nodes_devices_health_and_readings(client, seeded):
    page = sign_in(client, seeded.admin_token).get("/ui/fleet").text
    # h100: gpu-a 8 (device 0 has an XID) + gpu-b 8 (node not ready): 7 of 16 usable
    assert "<td>h100</td><td>nvidia</td><td class=\"num\">1 / 2</td><td class=\"num\">7 / 16</td>" in page
    broken = device_row(page, "gpu-a", 0)
    assert "unhealthy" in broken and ">79<" in broken
    busy = device_row(page, "gpu-a", 3)
    assert "healthy" in busy and "30.0%" in busy and "40.0 / 80 GiB" in busy  # 40960 MiB of 80 GiB
    assert "250 W" in busy  # 100 W + 3 × 50 W
    assert "node unhealthy" in page.split('id="node-gpu-b"')[1].split("</h2>")[0]
    assert "unhealthy" in device_row(page, "gpu-b", 5)  # its node is not ready
    assert "50.0%" in device_row(page, "l4-a", 0) and "8.0 / 24 GiB" in device_row(page, "l4-a", 0)
    assert 'id="chart-nodes"' in page


def test_a_reading_older_than_five_minutes_is_not_shown(client, seeded, engine):
    with Session(engine) as session:
        session.add(DeviceTelemetry(minute=NOW.replace(second=0) - timedelta(minutes=6), hostname="l4-a", index=1,
                                    utilisation=0.99, memory_used_mib=1024))
        session.commit()
    page = sign_in(client, seeded.admin_token).get("/ui/fleet").text
    assert "99.0%" not in page and "—" in device_row(page, "l4-a", 1)


def test_a_tenant_sees_capacity_per_class_but_no_node(client, seeded):
    page = sign_in(client, seeded.acme_token).get("/ui/fleet").text
    assert "7 / 16" in page
    for inventory in ("gpu-a", "gpu-b", "l4-a", "node-", "chart-nodes"):
        assert inventory not in page, inventory


def test_each_class_shows_its_calibration_or_never(client, seeded, engine):
    from controlplane.calibration import Measured, record_calibration

    with Session(engine) as session:
        # l4: 121 TFLOP/s bf16 and 300 GB/s; measured at 45% of bf16 and fp16, 30% of fp32, 240 GB/s.
        record_calibration(session, "l4", Measured({"bfloat16": 54_450.0, "float16": 54_450.0, "float32": 18_150.0},
                                                   240.0, 1, "heteroplane calibrate on l4-a"), NOW)
    page = sign_in(client, seeded.admin_token).get("/ui/fleet").text
    rows = {name: row for name in ("h100", "l4") for row in page.split("<tr>") if row.startswith(f"<td>{name}</td>")}
    assert "bf16 45.0% · fp16 45.0% · fp32 30.0% · memory 80.0%" in rows["l4"]
    assert 'title="heteroplane calibrate on l4-a"' in rows["l4"] and NOW.strftime("%Y-%m-%d %H:%M") in rows["l4"]
    assert "never" in rows["h100"] and "bf16" not in rows["h100"]
