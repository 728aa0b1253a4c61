"""Every endpoint of the review app through FastAPI's TestClient, including the ways a request can be hostile."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from qa_testutil import BASELINE, FOLLOWUP, PAIR, SUBJECT, US_CASE, labels_of, nifti_bytes

from koaimg.qa import create_app


def _etag(client: TestClient, case: str) -> str:
    response = client.get(f"/api/cases/{case}")
    assert response.status_code == 200
    return response.headers["etag"]


def _upload(client: TestClient, case: str, data: bytes, etag: str, **params) -> object:
    return client.post(f"/api/cases/{case}/corrections", content=data, params=params,
                       headers={"content-type": "application/octet-stream", "if-match": etag})


# -- pages and reading ---------------------------------------------------------------------------------------------
def test_pages_and_static_assets_are_served_locally(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and "worklist" in index.text
    page = client.get(f"/cases/{BASELINE}")
    assert page.status_code == 200 and "/static/case.js" in page.text
    assert client.get("/cases/NOPE~x~MR").status_code == 404
    niivue = client.get("/static/vendor/niivue/niivue.js")
    assert niivue.status_code == 200 and "var Niivue = class" in niivue.text
    assert client.get("/static/vendor/niivue/LICENSE").text.startswith("BSD 2-Clause License")
    for name in ("case.js", "worklist.js", "common.js", "qa.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for page_html in (index.text, page.text):  # offline hospitals: nothing from another origin
        assert "http://" not in page_html and "https://" not in page_html
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert index.headers["x-frame-options"] == "DENY" and index.headers["referrer-policy"] == "no-referrer"
    assert client.get("/api/cases", headers={"host": "evil.example"}).headers["x-content-type-options"] == "nosniff"


def test_worklist_lists_scans_and_pairs_with_filters_and_search(client: TestClient) -> None:
    data = client.get("/api/cases").json()
    ids = [c["id"] for c in data["cases"]]
    assert ids == [BASELINE, PAIR, FOLLOWUP, US_CASE]
    assert data["counts"]["unreviewed"] == 4 and data["total"] == 4
    base = next(c for c in data["cases"] if c["id"] == BASELINE)
    assert base["flags"][0]["code"] == "low_contrast"
    assert "path" not in str(base).lower() and "/tmp" not in str(data)
    assert [c["id"] for c in client.get("/api/cases", params={"kind": "pair"}).json()["cases"]] == [PAIR]
    assert [c["id"] for c in client.get("/api/cases", params={"flagged": "true"}).json()["cases"]] == [BASELINE]
    assert [c["id"] for c in client.get("/api/cases", params={"q": "koa-002"}).json()["cases"]] == [US_CASE]
    assert client.get("/api/cases", params={"status": "approved"}).json()["cases"] == []
    assert client.get("/api/cases", params={"status": "bogus"}).status_code == 400
    assert client.get("/api/cases", params={"kind": "bogus"}).status_code == 422


def test_case_detail_has_tables_grid_and_viewer_urls(client: TestClient) -> None:
    response = client.get(f"/api/cases/{BASELINE}")
    detail = response.json()
    assert response.headers["etag"] == '"0"'
    assert set(detail["volumes"]) == {"image", "labels", "thickness", "regions"}
    assert detail["correctable"] and detail["next_id"] == PAIR and detail["prev_id"] is None
    assert [r["region"] for r in detail["moaks"]][:3] == ["FMT", "FLT", "FMC"]
    row = next(r for r in detail["regional"]["rows"] if r["structure"] == "femoral_cartilage" and r["region"] == "all")
    assert 0.5 < row["values"]["0"]["ThCtAB.Me"] < 5
    assert detail["images"] == {"thickness_map": f"/api/cases/{BASELINE}/v/0/thickness_map.png"}
    pair = client.get(f"/api/cases/{PAIR}").json()
    assert pair["kind"] == "pair" and pair["baseline_case"] == BASELINE and pair["followup_case"] == FOLLOWUP
    assert "delta" in pair["volumes"] and pair["volumes"]["image"].startswith(f"/api/cases/{BASELINE}/")
    assert pair["images"] == {"delta_map": f"/api/cases/{PAIR}/v/0/delta_map.png"}
    assert any(r["metric"] == "ThCtAB.Me" and r["delta"] is not None for r in pair["change"])
    us = client.get(f"/api/cases/{US_CASE}").json()
    assert us["images"] == {"overlay": f"/api/cases/{US_CASE}/v/0/overlay.png"} and not us["correctable"]
    assert {r["region"] for r in us["regional"]["rows"]} == {"LC", "IN", "MC", "mean"}


def test_volumes_are_served_with_header_text_scrubbed(client: TestClient, qa_out: Path) -> None:
    path = qa_out / SUBJECT / "baseline" / "MR" / "labels.nii.gz"
    img = nib.load(str(path))
    img.header["descrip"] = b"Doe^John 19700101"
    img.header["aux_file"] = b"MRN123"
    nib.save(img, str(path))
    response = client.get(f"/api/cases/{BASELINE}/v/0/labels.nii.gz")
    assert response.status_code == 200
    raw = gzip.decompress(response.content)
    assert b"Doe" not in raw and b"MRN123" not in raw
    served = nib.Nifti1Image.from_bytes(raw)
    assert np.array_equal(np.asarray(served.dataobj), np.asarray(img.dataobj))
    assert np.allclose(served.affine, img.affine)
    for role in ("image", "thickness", "regions"):
        assert client.get(f"/api/cases/{BASELINE}/v/0/{role}.nii.gz").status_code == 200
    assert client.get(f"/api/cases/{PAIR}/v/0/delta.nii.gz").status_code == 200
    assert client.get(f"/api/cases/{US_CASE}/v/0/overlay.png").headers["content-type"] == "image/png"
    assert client.get(f"/api/cases/{BASELINE}/v/0/thickness_map.png").status_code == 200
    assert client.get(f"/api/cases/{BASELINE}/v/1/labels.nii.gz").status_code == 404  # no such version yet
    assert client.get(f"/api/cases/{US_CASE}/v/0/labels.nii.gz").status_code == 404
    assert client.get(f"/api/cases/{BASELINE}/v/0/moaks.nii.gz").status_code == 422  # not a servable role


def test_labels_lut_and_audit_csv(client: TestClient) -> None:
    lut = client.get("/api/labels.json").json()
    assert lut["I"][:3] == [0, 1, 2] and lut["labels"][2] == "femoral_cartilage" and len(lut["R"]) == len(lut["I"])
    etag = _etag(client, BASELINE)
    client.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved", "comment": "fine"},
                headers={"if-match": etag})
    csv_text = client.get("/api/audit.csv")
    assert csv_text.headers["content-type"].startswith("text/csv")
    lines = csv_text.text.strip().splitlines()
    assert lines[0].startswith("seq,at,reviewer,case_id,action") and "approved" in lines[1] and "dr.a" in lines[1]
    assert client.get(f"/api/cases/{BASELINE}/audit").json()[0]["after"] == "approved"
    assert client.get("/api/session").json()["reviewer"] == "dr.a"


# -- decisions, overrides, concurrency ---------------------------------------------------------------------------
def test_decision_requires_etag_and_records_who_and_what(client: TestClient) -> None:
    url = f"/api/cases/{BASELINE}/decision"
    assert client.post(url, json={"status": "approved"}).status_code == 428
    assert client.post(url, json={"status": "approved"}, headers={"if-match": "abc"}).status_code == 400
    assert client.post(url, json={"status": "corrected"}, headers={"if-match": '"0"'}).status_code == 422
    ok = client.post(url, json={"status": "flagged", "reviewer": "dr.b", "comment": "check FMC"},
                     headers={"if-match": '"0"'})
    assert ok.status_code == 200 and ok.headers["etag"] == '"1"'
    assert ok.json()["status"] == "flagged" and ok.json()["reviewer"] == "dr.b"
    listed = client.get("/api/cases", params={"status": "flagged"}).json()["cases"]
    assert [c["id"] for c in listed] == [BASELINE]
    event = client.get(f"/api/cases/{BASELINE}/audit").json()[-1]
    assert (event["reviewer"], event["before"], event["after"], event["comment"]) == \
        ("dr.b", "unreviewed", "flagged", "check FMC")


def test_reviewer_name_is_required_without_a_default(qa_out: Path) -> None:
    with TestClient(create_app(qa_out), base_url="http://127.0.0.1") as c:
        r = c.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved"}, headers={"if-match": '"0"'})
        assert r.status_code == 400 and "reviewer" in r.json()["detail"]
        r = c.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved", "reviewer": "bad\x01name"},
                   headers={"if-match": '"0"'})
        assert r.status_code == 400


def test_two_reviewers_racing_on_one_case_get_a_conflict_not_a_lost_update(client: TestClient) -> None:
    etag = _etag(client, BASELINE)  # both reviewers opened the case at this version
    first = client.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved", "reviewer": "dr.a"},
                        headers={"if-match": etag})
    second = client.post(f"/api/cases/{BASELINE}/decision", json={"status": "rejected", "reviewer": "dr.b"},
                         headers={"if-match": etag})
    assert first.status_code == 200 and second.status_code == 409
    assert "version 1" in second.json()["detail"]
    assert client.get(f"/api/cases/{BASELINE}").json()["state"]["status"] == "approved"
    assert [e["reviewer"] for e in client.get(f"/api/cases/{BASELINE}/audit").json()] == ["dr.a"]


def test_racing_threads_exactly_one_write_wins(client: TestClient) -> None:
    etag = _etag(client, FOLLOWUP)
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def post(i: int) -> None:
        barrier.wait()
        r = client.post(f"/api/cases/{FOLLOWUP}/decision", json={"status": "flagged", "reviewer": f"dr.{i}"},
                        headers={"if-match": etag})
        codes.append(r.status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * 5
    assert len(client.get(f"/api/cases/{FOLLOWUP}/audit").json()) == 1


def test_moaks_grade_override_keeps_the_automated_grade_on_file(client: TestClient) -> None:
    url = f"/api/cases/{BASELINE}/grades"
    auto = next(r for r in client.get(f"/api/cases/{BASELINE}").json()["moaks"] if r["region"] == "FMC")
    body = {"region": "FMC", "grade": "moaks_any_loss_grade", "value": 3, "comment": "larger than measured"}
    r = client.post(url, json=body, headers={"if-match": '"0"'})
    assert r.status_code == 200
    detail = client.get(f"/api/cases/{BASELINE}").json()
    row = next(x for x in detail["moaks"] if x["region"] == "FMC")
    assert row["override"] == {"moaks_any_loss_grade": 3}
    assert row["automated"]["moaks_any_loss_grade"] == auto["automated"]["moaks_any_loss_grade"]
    event = detail["audit"][-1]
    assert event["field"] == "FMC.moaks_any_loss_grade" and event["after"] == "3"
    assert event["before"] == str(auto["automated"]["moaks_any_loss_grade"])
    cleared = client.post(url, json={**body, "value": None}, headers={"if-match": '"1"'})
    assert cleared.status_code == 200 and client.get(f"/api/cases/{BASELINE}").json()["overrides"] == {}
    assert client.post(url, json={**body, "value": 4}, headers={"if-match": '"2"'}).status_code == 422
    assert client.post(url, json={**body, "region": "XYZ"}, headers={"if-match": '"2"'}).status_code == 400
    assert client.post(url, json=body, headers={"if-match": '"0"'}).status_code == 409
    assert client.post(f"/api/cases/{PAIR}/grades", json=body, headers={"if-match": '"0"'}).status_code == 400


# -- hostile requests ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/api/cases/..%2F..%2Fetc%2Fpasswd",
    "/api/cases/%2E%2E/v/0/labels.nii.gz",
    "/api/cases/KOA-001~..~MR/v/0/labels.nii.gz",
    "/api/cases/KOA-001~baseline~MR/v/0/..%2Fmeasures.nii.gz",
    "/api/cases/KOA-001~baseline~MR/v/-1/labels.nii.gz",
    "/api/cases/KOA-001~baseline~MR/v/0/%2E%2E%2F%2E%2E%2Fqa%2Freview.sqlite",
    "/static/../qa/_app.py",
    "/static/%2e%2e/_app.py",
    "/cases/..%2F..%2Fqa",
    "/api/cases/cohort~x~y",
])
def test_path_traversal_attempts_never_reach_the_file_system(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (404, 422)
    assert b"SQLite" not in response.content and b"import" not in response.content


def test_symlink_out_of_the_case_folder_is_not_followed(client: TestClient, qa_out: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    (qa_out / SUBJECT / "baseline" / "MR" / "femoral_thickness_map.png").unlink()
    (qa_out / SUBJECT / "baseline" / "MR" / "femoral_thickness_map.png").symlink_to(secret)
    assert client.get(f"/api/cases/{BASELINE}/v/0/thickness_map.png").status_code == 404


def test_token_is_required_on_every_request_when_set(qa_out: Path) -> None:
    app = create_app(qa_out, token="s3cret-token", reviewer="dr.a", allowed_hosts=None)
    with TestClient(app, base_url="http://10.0.0.5:8765") as c:
        for path in ("/", "/api/cases", f"/api/cases/{BASELINE}", "/static/qa.css", "/api/audit.csv",
                     f"/api/cases/{BASELINE}/v/0/labels.nii.gz", "/api/labels.json"):
            assert c.get(path).status_code == 401, path
        assert c.get("/api/cases", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/cases", headers={"authorization": "Bearer s3cret-tokeN"}).status_code == 401
        assert c.get("/api/cases", headers={"cookie": "koaimg_qa=nope"}).status_code == 401
        assert c.get("/?token=wrong", follow_redirects=False).status_code == 401
        assert c.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved"},
                      headers={"if-match": '"0"'}).status_code == 401
        assert c.get("/api/cases", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        login = c.get("/?token=s3cret-token", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=Strict" in login.headers["set-cookie"]
        assert c.get("/api/cases").status_code == 200  # the cookie now rides along


def test_loopback_server_refuses_foreign_host_and_cross_origin_writes(client: TestClient, qa_out: Path) -> None:
    assert client.get("/api/cases", headers={"host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    r = client.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved"},
                    headers={"if-match": '"0"', "origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved"},
                    headers={"if-match": '"0"', "origin": "http://127.0.0.1:8765"})
    assert r.status_code == 200


# -- corrections ---------------------------------------------------------------------------------------------------
def test_correction_is_validated_stored_as_new_version_and_remeasured(client: TestClient, qa_out: Path) -> None:
    scan = qa_out / SUBJECT / "baseline" / "MR"
    originals = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in scan.iterdir() if p.is_file()}
    ref = labels_of(qa_out)
    labels = np.asarray(ref.dataobj).copy()
    fem = np.argwhere(labels == 2)
    labels[tuple(fem[fem[:, 0] < np.median(fem[:, 0])].T)] = 0  # reviewer erases half the femoral cartilage
    r = _upload(client, BASELINE, nifti_bytes(labels, ref.affine), '"0"', reviewer="dr.c", comment="over-segmented")
    assert r.status_code == 201, r.text
    result = r.json()
    assert result["state"]["status"] == "corrected" and result["state"]["label_version"] == 1
    assert result["correction"]["labels"]["femoral_cartilage"] < 0
    assert r.headers["etag"] == '"1"'
    v1 = scan / "corrected" / "v1"
    assert {"labels.nii.gz", "measures.csv", "moaks.json", "thickness.nii.gz", "correction.json"} <= \
        {p.name for p in v1.iterdir()}
    assert np.array_equal(np.asarray(nib.load(str(v1 / "labels.nii.gz")).dataobj), labels)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in scan.iterdir() if p.is_file()}
    assert after == originals  # the original outputs are never touched
    detail = client.get(f"/api/cases/{BASELINE}").json()
    assert detail["shown_version"] == 1 and detail["volumes"]["labels"].endswith("/v/1/labels.nii.gz")
    row = next(x for x in detail["regional"]["rows"] if x["structure"] == "femoral_cartilage" and x["region"] == "all")
    assert row["values"]["1"]["tAB"] < row["values"]["0"]["tAB"]  # both versions, the corrected one smaller
    assert client.get(f"/api/cases/{BASELINE}/v/1/labels.nii.gz").status_code == 200
    assert client.get(f"/api/cases/{BASELINE}/v/0/labels.nii.gz").status_code == 200
    pair_event = client.get(f"/api/cases/{PAIR}/audit").json()[-1]
    assert pair_event["action"] == "change_recompute" and '"recomputed": true' in pair_event["after"]
    assert result["pairs"] == [{"pair": PAIR, "recomputed": True, "version": 1,
                                "trigger_versions": {BASELINE: 1, FOLLOWUP: 0}}]
    pair_dir = qa_out / SUBJECT / "change_baseline_month6"
    assert (pair_dir / "corrected" / "v1" / "change.csv").is_file() and (pair_dir / "change.csv").is_file()
    pair = client.get(f"/api/cases/{PAIR}").json()
    assert pair["shown_version"] == 1 and pair["volumes"]["labels"].endswith(f"{BASELINE}/v/1/labels.nii.gz")
    assert pair["change_original"] and pair["change"] != pair["change_original"]
    second = _upload(client, BASELINE, nifti_bytes(np.asarray(ref.dataobj), ref.affine), '"1"', source="drawn")
    assert second.status_code == 201 and second.json()["state"]["label_version"] == 2
    assert (scan / "corrected" / "v1" / "labels.nii.gz").is_file()  # v1 kept when v2 arrives
    assert second.json()["correction"]["based_on"] == 1
    older = client.get(f"/api/cases/{BASELINE}", params={"version": 1}).json()
    assert older["shown_version"] == 1 and older["versions"] == [0, 1, 2]
    assert older["volumes"]["labels"].endswith("/v/1/labels.nii.gz")
    assert client.get(f"/api/cases/{BASELINE}", params={"version": 3}).status_code == 404
    assert _upload(client, BASELINE, b"x", '"2"', based_on=7).status_code == 400
    third = _upload(client, BASELINE, nifti_bytes(labels, ref.affine), '"2"', based_on=0)
    assert third.status_code == 201 and third.json()["correction"]["based_on"] == 0
    assert third.json()["correction"]["labels"]["femoral_cartilage"] < 0  # compared with the automated labels


def test_wrong_grid_affine_and_values_are_refused(client: TestClient, qa_out: Path) -> None:
    ref = labels_of(qa_out)
    labels = np.asarray(ref.dataobj)
    shifted = ref.affine.copy()
    shifted[0, 3] += 0.5
    cases = {
        "grid": nifti_bytes(labels[:-1], ref.affine),
        "affine": nifti_bytes(labels, shifted),
        "values": nifti_bytes(np.where(labels == 2, 42, labels).astype(np.uint8), ref.affine),
        "float": nifti_bytes(labels.astype(np.float32) + 0.25, ref.affine),
    }
    for name, data in cases.items():
        r = _upload(client, BASELINE, data, '"0"')
        assert r.status_code == 422, name
    assert "grid" in _upload(client, BASELINE, cases["grid"], '"0"').json()["detail"]
    assert "42" in _upload(client, BASELINE, cases["values"], '"0"').json()["detail"]
    assert not (qa_out / SUBJECT / "baseline" / "MR" / "corrected").exists() or \
        not any((qa_out / SUBJECT / "baseline" / "MR" / "corrected").glob("v*"))
    assert client.get(f"/api/cases/{BASELINE}").json()["state"]["version"] == 0


def test_malformed_and_oversized_uploads_are_refused(client: TestClient, qa_out: Path) -> None:
    ref = labels_of(qa_out)
    assert _upload(client, BASELINE, b"", '"0"').status_code == 422
    assert _upload(client, BASELINE, b"not a nifti at all" * 100, '"0"').status_code == 422
    assert _upload(client, BASELINE, gzip.compress(b"\0" * 4096), '"0"').status_code == 422
    truncated = nifti_bytes(np.asarray(ref.dataobj), ref.affine)[:-2000]
    assert _upload(client, BASELINE, truncated, '"0"').status_code == 422
    bomb = gzip.compress(b"\x5c\x01" + b"\0" * (40 * 1024 * 1024))  # 40 MB of zeros in ~40 kB
    r = _upload(client, BASELINE, bomb, '"0"')
    assert r.status_code == 422 and "larger" in r.json()["detail"]
    big = b"\0" * (8 * 1024 * 1024 + 1)
    assert _upload(client, BASELINE, big, '"0"').status_code == 413
    r = client.post(f"/api/cases/{BASELINE}/corrections", content=iter([b"\0" * (1 << 20)] * 9),
                    headers={"content-type": "application/octet-stream", "if-match": '"0"'})
    assert r.status_code == 413  # chunked body without Content-Length is counted as it arrives
    r = client.post(f"/api/cases/{BASELINE}/corrections", files={"f": ("x.nii.gz", io.BytesIO(b"x"))},
                    headers={"if-match": '"0"'})
    assert r.status_code == 415
    assert _upload(client, BASELINE, b"x", "").status_code == 400
    r = client.post(f"/api/cases/{BASELINE}/corrections", content=b"x",
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 428
    assert _upload(client, US_CASE, b"x", '"0"').status_code == 400
    assert _upload(client, PAIR, b"x", '"0"').status_code == 400
    assert _upload(client, "NOPE~a~MR", b"x", '"0"').status_code == 404
    assert _upload(client, BASELINE, b"x", '"0"', source="ftp").status_code == 422


def test_stale_correction_gets_409_and_leaves_no_version(client: TestClient, qa_out: Path) -> None:
    ref = labels_of(qa_out)
    client.post(f"/api/cases/{BASELINE}/decision", json={"status": "approved"}, headers={"if-match": '"0"'})
    r = _upload(client, BASELINE, nifti_bytes(np.asarray(ref.dataobj), ref.affine), '"0"')
    assert r.status_code == 409
    assert not any((qa_out / SUBJECT / "baseline" / "MR").glob("corrected/v*"))


@pytest.mark.slow
def test_review_of_a_real_batch_run(tmp_path: Path) -> None:
    """``koaimg run`` on sample_data, then every case view, volume and picture, and a correction with its recompute."""
    from typer.testing import CliRunner

    from koaimg.cli._app import _register, app

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "OUT"
    _register()
    CliRunner().invoke(app, ["run", str(repo / "sample_data" / "SAMPLE-01"), str(out), "--labels-dir",
                             str(repo / "sample_data" / "ground_truth"), "--workers", "1", "--skip", "dicom"])
    with TestClient(create_app(out, reviewer="dr.batch"), base_url="http://127.0.0.1") as c:
        cases = c.get("/api/cases").json()["cases"]
        assert {x["kind"] for x in cases} == {"scan", "pair"}
        for x in cases:
            detail = c.get(f"/api/cases/{x['id']}").json()
            for url in [*detail["volumes"].values(), *detail["images"].values()]:
                assert c.get(url).status_code == 200, url
        scan = next(x["id"] for x in cases if x["kind"] == "scan" and x["modality"] == "MR")
        subject, visit, modality = scan.split("~")
        ref = nib.load(str(out / subject / visit / modality / "labels.nii.gz"))
        r = _upload(c, scan, nifti_bytes(np.asarray(ref.dataobj), ref.affine), '"0"')
        assert r.status_code == 201 and all(p["recomputed"] for p in r.json()["pairs"])
