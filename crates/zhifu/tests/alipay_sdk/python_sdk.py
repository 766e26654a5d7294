"""Drives zhifu's /gateway.do with Alipay's official Python SDK (alipay-sdk-python).

Run by crates/zhifu/tests/gateway.rs against a real `zhifu serve --clock simulated`:
    python3 python_sdk.py <base url> <admin key>
Every SDK call below verifies the answer's signature with the platform's key
(DefaultAlipayClient.execute raises if it does not verify).
"""

import json
import sys
import urllib.request

from Crypto.PublicKey import RSA

from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayDataDataserviceBillDownloadurlQueryModel import AlipayDataDataserviceBillDownloadurlQueryModel
from alipay.aop.api.domain.AlipayFundAuthOperationDetailQueryModel import AlipayFundAuthOperationDetailQueryModel
from alipay.aop.api.domain.AlipayFundAuthOrderFreezeModel import AlipayFundAuthOrderFreezeModel
from alipay.aop.api.domain.AlipayFundAuthOrderUnfreezeModel import AlipayFundAuthOrderUnfreezeModel
from alipay.aop.api.domain.AlipayFundTransUniTransferModel import AlipayFundTransUniTransferModel
from alipay.aop.api.domain.AlipayTradeCancelModel import AlipayTradeCancelModel
from alipay.aop.api.domain.AlipayTradeCloseModel import AlipayTradeCloseModel
from alipay.aop.api.domain.AlipayTradeFastpayRefundQueryModel import AlipayTradeFastpayRefundQueryModel
from alipay.aop.api.domain.AlipayTradePayModel import AlipayTradePayModel
from alipay.aop.api.domain.AlipayTradePrecreateModel import AlipayTradePrecreateModel
from alipay.aop.api.domain.AlipayTradeQueryModel import AlipayTradeQueryModel
from alipay.aop.api.domain.AlipayTradeRefundModel import AlipayTradeRefundModel
from alipay.aop.api.domain.AlipayTradeOrderSettleModel import AlipayTradeOrderSettleModel
from alipay.aop.api.domain.AlipayTradeOrderSettleQueryModel import AlipayTradeOrderSettleQueryModel
from alipay.aop.api.domain.AlipayTradeRoyaltyRelationBatchqueryModel import AlipayTradeRoyaltyRelationBatchqueryModel
from alipay.aop.api.domain.AlipayTradeRoyaltyRelationBindModel import AlipayTradeRoyaltyRelationBindModel
from alipay.aop.api.domain.AlipayTradeRoyaltyRelationUnbindModel import AlipayTradeRoyaltyRelationUnbindModel
from alipay.aop.api.domain.OpenApiRoyaltyDetailInfoPojo import OpenApiRoyaltyDetailInfoPojo
from alipay.aop.api.domain.Participant import Participant
from alipay.aop.api.domain.RoyaltyEntity import RoyaltyEntity
from alipay.aop.api.request.AlipayDataDataserviceBillDownloadurlQueryRequest import AlipayDataDataserviceBillDownloadurlQueryRequest
from alipay.aop.api.request.AlipayFundAuthOperationDetailQueryRequest import AlipayFundAuthOperationDetailQueryRequest
from alipay.aop.api.request.AlipayFundAuthOrderFreezeRequest import AlipayFundAuthOrderFreezeRequest
from alipay.aop.api.request.AlipayFundAuthOrderUnfreezeRequest import AlipayFundAuthOrderUnfreezeRequest
from alipay.aop.api.request.AlipayFundTransUniTransferRequest import AlipayFundTransUniTransferRequest
from alipay.aop.api.request.AlipayTradeCancelRequest import AlipayTradeCancelRequest
from alipay.aop.api.request.AlipayTradeCloseRequest import AlipayTradeCloseRequest
from alipay.aop.api.request.AlipayTradeFastpayRefundQueryRequest import AlipayTradeFastpayRefundQueryRequest
from alipay.aop.api.request.AlipayTradePayRequest import AlipayTradePayRequest
from alipay.aop.api.request.AlipayTradePrecreateRequest import AlipayTradePrecreateRequest
from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
from alipay.aop.api.request.AlipayTradeOrderSettleQueryRequest import AlipayTradeOrderSettleQueryRequest
from alipay.aop.api.request.AlipayTradeOrderSettleRequest import AlipayTradeOrderSettleRequest
from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest
from alipay.aop.api.request.AlipayTradeRoyaltyRelationBatchqueryRequest import AlipayTradeRoyaltyRelationBatchqueryRequest
from alipay.aop.api.request.AlipayTradeRoyaltyRelationBindRequest import AlipayTradeRoyaltyRelationBindRequest
from alipay.aop.api.request.AlipayTradeRoyaltyRelationUnbindRequest import AlipayTradeRoyaltyRelationUnbindRequest
from alipay.aop.api.util import WebUtils
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa

BASE, ADMIN = sys.argv[1], sys.argv[2]


def _connection_honouring_the_port(url, query_string, timeout):
    """alipay-sdk-python 3.7 drops the port of server_url (it connects to 80
    or 443 and fails to build the URL): the only change made to the SDK here,
    so that the test server can use a free port. Signing and verification
    are the SDK's own."""
    import http.client
    from urllib.parse import urlparse
    parsed = urlparse(url)
    kind = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    connection = kind(host=parsed.hostname, port=parsed.port, timeout=timeout)
    return url + "?" + query_string, connection


WebUtils.get_http_connection = _connection_honouring_the_port


def rest(method, path, key, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + key)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def bare(pem):
    """A PEM key as the SDK wants it: the base64 alone."""
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


def client(app_id, private_key, alipay_public_key):
    config = AlipayClientConfig()
    config.server_url = BASE + "/gateway.do"
    config.app_id = app_id
    config.app_private_key = private_key
    config.alipay_public_key = alipay_public_key
    return DefaultAlipayClient(alipay_client_config=config)


def call(sdk, request_class, model, notify_url=None):
    """Executes (verifying the answer's signature) and returns the answer object."""
    request = request_class(biz_model=model)
    if notify_url:
        request.notify_url = notify_url
    return json.loads(sdk.execute(request))


def expect(answer, code, sub_code=None):
    assert answer["code"] == code, answer
    if sub_code is not None:
        assert answer.get("sub_code") == sub_code, answer


# A merchant whose app key is registered with zhifu.
app_key = RSA.generate(2048)
app_private = bare(app_key.export_key("PEM", pkcs=1).decode())
status, merchant = rest("POST", "/v1/merchants", ADMIN, {"name": "till shop", "app_public_key": app_key.publickey().export_key("PEM").decode()})
assert status == 201, merchant
alipay_public = bare(merchant["alipay_public_key"])
sdk = client(merchant["app_id"], app_private, alipay_public)

# A buyer with money, showing a payment code at the till.
status, buyer = rest("POST", "/v1/users", ADMIN, {"name": "buyer"})
assert status == 201, buyer
assert rest("POST", "/v1/topups", buyer["api_key"], {"amount": 100000, "bank": "ICBC"})[0] == 201
status, code = rest("POST", "/v1/payment-codes", buyer["api_key"])
assert status == 201 and len(code["auth_code"]) == 18, code

# alipay.trade.pay: the till charges the buyer at once.
pay = AlipayTradePayModel()
pay.out_trade_no, pay.scene, pay.auth_code, pay.subject, pay.total_amount = "till-1", "bar_code", code["auth_code"], "tea", "88.88"
paid = call(sdk, AlipayTradePayRequest, pay)
expect(paid, "10000")
assert paid["out_trade_no"] == "till-1" and paid["total_amount"] == "88.88" and paid["buyer_user_id"] == buyer["id"], paid
# The same code again: used up.
pay.out_trade_no = "till-2"
expect(call(sdk, AlipayTradePayRequest, pay), "40004", "ACQ.PAYMENT_AUTH_CODE_INVALID")
# An expired code: 61 seconds of clock time later.
status, late = rest("POST", "/v1/payment-codes", buyer["api_key"])
assert rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 61})[0] == 200
pay.auth_code = late["auth_code"]
expect(call(sdk, AlipayTradePayRequest, pay), "40004", "ACQ.PAYMENT_AUTH_CODE_INVALID")

# A till payment the buyer cannot afford is refused, and leaves the code
# usable once the money is there.
status, poor = rest("POST", "/v1/users", ADMIN, {"name": "poor buyer"})
status, poor_code = rest("POST", "/v1/payment-codes", poor["api_key"])
pay.auth_code, pay.out_trade_no, pay.total_amount = poor_code["auth_code"], "till-3", "5.00"
expect(call(sdk, AlipayTradePayRequest, pay), "40004", "ACQ.BUYER_BALANCE_NOT_ENOUGH")
assert rest("POST", "/v1/topups", poor["api_key"], {"amount": 500, "bank": "ICBC"})[0] == 201
pay.out_trade_no = "till-4"
expect(call(sdk, AlipayTradePayRequest, pay), "10000")

# alipay.trade.query.
query = AlipayTradeQueryModel()
query.out_trade_no = "till-1"
found = call(sdk, AlipayTradeQueryRequest, query)
expect(found, "10000")
assert found["trade_status"] == "TRADE_SUCCESS" and found["trade_no"] == paid["trade_no"], found
query.out_trade_no = "no-such-trade"
expect(call(sdk, AlipayTradeQueryRequest, query), "40004", "ACQ.TRADE_NOT_EXIST")

# Partial refunds, a repeated one, one over what was paid.
refund = AlipayTradeRefundModel()
refund.out_trade_no, refund.refund_amount, refund.out_request_no = "till-1", "10.00", "r1"
first = call(sdk, AlipayTradeRefundRequest, refund)
expect(first, "10000")
assert first["fund_change"] == "Y" and first["refund_fee"] == "10.00", first
again = call(sdk, AlipayTradeRefundRequest, refund)
expect(again, "10000")
assert again["fund_change"] == "N" and again["refund_fee"] == "10.00", again
refund.refund_amount, refund.out_request_no = "20.00", "r1"
expect(call(sdk, AlipayTradeRefundRequest, refund), "40004", "ACQ.DISCORDANT_REPEAT_REQUEST")
refund.refund_amount, refund.out_request_no = "30.00", "r2"
second = call(sdk, AlipayTradeRefundRequest, refund)
assert second["fund_change"] == "Y" and second["refund_fee"] == "40.00", second
refund.refund_amount, refund.out_request_no = "48.89", "r3"
expect(call(sdk, AlipayTradeRefundRequest, refund), "40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
refund_query = AlipayTradeFastpayRefundQueryModel()
refund_query.out_trade_no, refund_query.out_request_no = "till-1", "r2"
refunded = call(sdk, AlipayTradeFastpayRefundQueryRequest, refund_query)
assert refunded["refund_amount"] == "30.00" and refunded["refund_status"] == "REFUND_SUCCESS", refunded
status, balance = rest("GET", "/v1/balance", buyer["api_key"])
assert balance["available"] == 100000 - 8888 + 4000, balance

# alipay.trade.precreate, then the buyer's app pays the QR code's trade.
precreate = AlipayTradePrecreateModel()
precreate.out_trade_no, precreate.total_amount, precreate.subject = "qr-1", "12.34", "cake"
created = call(sdk, AlipayTradePrecreateRequest, precreate)
expect(created, "10000")
assert created["qr_code"].startswith(BASE + "/qr/"), created
trade_no = created["trade_no"]
# The QR code opens the phone cashier.
qr = urllib.request.Request(created["qr_code"])
class _Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
try:
    urllib.request.build_opener(_Stay).open(qr)
    raise AssertionError("the QR code's URL redirects to the cashier")
except urllib.error.HTTPError as seen:
    assert seen.code == 303 and "/cashier?t=" in seen.headers["Location"] and seen.headers["Location"].endswith("&phone=1"), seen.headers
status, view = rest("POST", "/v1/trades/%s/pay" % trade_no, buyer["api_key"], {})
assert status == 200 and view["status"] == "TRADE_SUCCESS", view
query.out_trade_no = "qr-1"
assert call(sdk, AlipayTradeQueryRequest, query)["trade_status"] == "TRADE_SUCCESS"

# alipay.trade.close of an unpaid trade; alipay.trade.cancel of a paid one refunds it.
precreate.out_trade_no = "qr-2"
call(sdk, AlipayTradePrecreateRequest, precreate)
close = AlipayTradeCloseModel()
close.out_trade_no = "qr-2"
expect(call(sdk, AlipayTradeCloseRequest, close), "10000")
query.out_trade_no = "qr-2"
assert call(sdk, AlipayTradeQueryRequest, query)["trade_status"] == "TRADE_CLOSED"
close.out_trade_no = "qr-1"
expect(call(sdk, AlipayTradeCloseRequest, close), "40004", "ACQ.TRADE_STATUS_ERROR")
cancel = AlipayTradeCancelModel()
cancel.out_trade_no = "qr-1"
cancelled = call(sdk, AlipayTradeCancelRequest, cancel)
assert cancelled["action"] == "refund", cancelled
query.out_trade_no = "qr-1"
assert call(sdk, AlipayTradeQueryRequest, query)["trade_status"] == "TRADE_CLOSED"

# alipay.fund.trans.uni.transfer: the merchant pays the buyer; out_biz_no makes it once.
transfer = AlipayFundTransUniTransferModel()
transfer.out_biz_no, transfer.trans_amount, transfer.product_code, transfer.biz_scene = "bonus-1", "1.00", "TRANS_ACCOUNT_NO_PWD", "DIRECT_TRANSFER"
payee = Participant()
payee.identity, payee.identity_type = buyer["id"], "ALIPAY_USER_ID"
transfer.payee_info = payee
moved = call(sdk, AlipayFundTransUniTransferRequest, transfer)
assert moved["status"] == "SUCCESS", moved
assert call(sdk, AlipayFundTransUniTransferRequest, transfer)["order_id"] == moved["order_id"]
payee.identity = "usr_" + merchant["id"].split("_")[1]  # a merchant's id under a user's prefix
transfer.out_biz_no, transfer.payee_info = "bonus-2", payee
expect(call(sdk, AlipayFundTransUniTransferRequest, transfer), "40004", "PAYEE_NOT_EXIST")

# Amounts zhifu will not guess at.
for amount in ["1.001", "-1", "1e3", "0", "abc"]:
    pay.total_amount, pay.out_trade_no = amount, "odd-" + amount
    expect(call(sdk, AlipayTradePayRequest, pay), "40002", "isv.invalid-parameter")

# A request signed with another key.
stranger = bare(RSA.generate(2048).export_key("PEM", pkcs=1).decode())
expect(call(client(merchant["app_id"], stranger, alipay_public), AlipayTradeQueryRequest, query), "40002", "isv.invalid-signature")


def raw(params, sign=True):
    """A hand-made request (what no SDK would send), signed with the app key."""
    params = dict(params)
    if sign:
        params["sign"] = sign_with_rsa2(app_private, get_sign_content(params), "utf-8")
    body = urllib.parse.urlencode(params).encode()
    request = urllib.request.Request(BASE + "/gateway.do", data=body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
        text = response.read().decode()
    # The answer verifies with the SDK's own check, as execute() does.
    start = text.index(":") + 1
    end = text.rindex(',"sign":"')
    signature = text[end + len(',"sign":"'):text.rindex('"')]
    assert verify_with_rsa(alipay_public, text[start:end].encode(), signature), text
    return json.loads(text)


import urllib.parse  # noqa: E402

common = {"app_id": merchant["app_id"], "method": "alipay.trade.query", "charset": "utf-8", "sign_type": "RSA2",
          "timestamp": "2013-11-11 00:00:00", "version": "1.0"}
answer = raw(dict(common, biz_content="{not json"))["alipay_trade_query_response"]
expect(answer, "40002", "isv.invalid-parameter")
answer = raw({k: v for k, v in common.items() if k != "timestamp"} | {"biz_content": "{}"})["alipay_trade_query_response"]
expect(answer, "40001", "isv.missing-timestamp")
answer = raw(dict(common, method="alipay.no.such.method", biz_content="{}"))["error_response"]
expect(answer, "40002", "isv.invalid-method")
answer = raw(dict(common, biz_content='{"out_trade_no":"till-1"}'), sign=False)["alipay_trade_query_response"]
expect(answer, "40001", "isv.missing-signature")

# Notifications: Alipay's form, signed with the platform's key, retried on
# Alipay's schedule until the merchant answers `success`.
import http.server  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

received = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        received.append(params)
        answer = b"fail" if len(received) == 1 else b"success"
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


receiver = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
notify_url = "http://127.0.0.1:%d/alipay/notify" % receiver.server_port


def wait_for(count, seconds=10):
    deadline = time.time() + seconds
    while len(received) < count and time.time() < deadline:
        time.sleep(0.05)
    assert len(received) >= count, received


def wait_for_attempts(trade_no, attempts, seconds=20):
    """An attempt is recorded (at the clock's time) just after the receiver
    answers; a clock advanced before that moves the next try past it."""
    deadline = time.time() + seconds
    while True:
        events = rest("GET", "/v1/events", merchant["api_key"])[1]["data"]
        notified = [event["id"] for event in events
                    if event["type"] == "trade.succeeded" and event["data"].get("trade_no") == trade_no]
        log = rest("GET", "/v1/events/%s/deliveries" % notified[0], merchant["api_key"])[1] if notified else {}
        if len(log.get("data", [])) >= attempts:
            return
        assert time.time() < deadline, (attempts, log)
        time.sleep(0.05)


precreate.out_trade_no, precreate.total_amount = "notified-1", "6.66"
created = call(sdk, AlipayTradePrecreateRequest, precreate, notify_url=notify_url)
trade_no = created["trade_no"]
assert rest("POST", "/v1/trades/%s/pay" % trade_no, buyer["api_key"], {})[0] == 200
wait_for(1)
first = received[0]
assert first["notify_type"] == "trade_status_sync" and first["trade_status"] == "TRADE_SUCCESS", first
assert first["out_trade_no"] == "notified-1" and first["total_amount"] == "6.66" and first["app_id"] == merchant["app_id"], first
# The merchant's check, with the SDK's functions: every parameter but sign
# and sign_type, sorted, verified with the platform's public key.
signature = first.pop("sign")
first.pop("sign_type")
assert verify_with_rsa(alipay_public, get_sign_content(first).encode(), signature), first
# It answered "fail": the next try comes 4 minutes of clock time later.
wait_for_attempts(trade_no, 1)
time.sleep(0.6)
assert len(received) == 1, received
assert rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 240})[0] == 200
wait_for(2)
retry = dict(received[1])
assert retry["notify_id"] == first["notify_id"] and retry["trade_status"] == "TRADE_SUCCESS", retry
retry_signature = retry.pop("sign")
retry.pop("sign_type")
assert verify_with_rsa(alipay_public, get_sign_content(retry).encode(), retry_signature), retry
# Acknowledged with "success": no more tries.
assert rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 3600})[0] == 200
time.sleep(0.6)
assert len(received) == 2, received

# Profit sharing: bind a receiver, settle part of a paid trade to it, query
# the settle; more than the trade left is refused with Alipay's sub-code.
status, carrier = rest("POST", "/v1/users", ADMIN, {"name": "carrier"})
assert status == 201, carrier
status, code = rest("POST", "/v1/payment-codes", buyer["api_key"])
pay.out_trade_no, pay.auth_code, pay.total_amount = "split-1", code["auth_code"], "50.00"
shared = call(sdk, AlipayTradePayRequest, pay)
expect(shared, "10000")
receiver = RoyaltyEntity()
receiver.type, receiver.account = "userId", carrier["id"]
bind = AlipayTradeRoyaltyRelationBindModel()
bind.out_request_no, bind.receiver_list = "bind-1", [receiver]
assert call(sdk, AlipayTradeRoyaltyRelationBindRequest, bind)["result_code"] == "SUCCESS"
listing = AlipayTradeRoyaltyRelationBatchqueryModel()
listing.out_request_no, listing.page_num, listing.page_size = "list-1", 1, 10
bound = call(sdk, AlipayTradeRoyaltyRelationBatchqueryRequest, listing)
assert [r["account"] for r in bound["receiver_list"]] == [carrier["id"]] and bound["total_record_num"] == 1, bound
part = OpenApiRoyaltyDetailInfoPojo()
part.royalty_type, part.trans_in_type, part.trans_in, part.amount = "transfer", "userId", carrier["id"], "10.00"
settle = AlipayTradeOrderSettleModel()
settle.out_request_no, settle.trade_no, settle.royalty_parameters = "settle-1", shared["trade_no"], [part]
settled = call(sdk, AlipayTradeOrderSettleRequest, settle)
expect(settled, "10000")
assert settled["trade_no"] == shared["trade_no"] and settled["settle_no"].startswith("spl_"), settled
assert rest("GET", "/v1/balance", carrier["api_key"])[1]["available"] == 1000
settle_query = AlipayTradeOrderSettleQueryModel()
settle_query.settle_no = settled["settle_no"]
details = call(sdk, AlipayTradeOrderSettleQueryRequest, settle_query)
assert details["out_request_no"] == "settle-1", details
assert [(d["trans_in"], d["amount"], d["state"]) for d in details["royalty_detail_list"]] == [(carrier["id"], "10.00", "SUCCESS")], details
settle_query = AlipayTradeOrderSettleQueryModel()
settle_query.out_request_no, settle_query.trade_no = "settle-1", shared["trade_no"]
assert call(sdk, AlipayTradeOrderSettleQueryRequest, settle_query)["royalty_detail_list"] == details["royalty_detail_list"]
# (The SDK's models copy what they are given: set the list again after a change.)
part.amount, settle.out_request_no = "39.71", "settle-2"  # 50.00 less the 0.30 fee less 10.00 left 39.70
settle.royalty_parameters = [part]
expect(call(sdk, AlipayTradeOrderSettleRequest, settle), "40004", "ACQ.ALLOC_AMOUNT_VALIDATE_ERROR")
unbind = AlipayTradeRoyaltyRelationUnbindModel()
unbind.out_request_no, unbind.receiver_list = "unbind-1", [receiver]
assert call(sdk, AlipayTradeRoyaltyRelationUnbindRequest, unbind)["result_code"] == "SUCCESS"
part.amount, settle.out_request_no = "1.00", "settle-3"
settle.royalty_parameters = [part]
expect(call(sdk, AlipayTradeOrderSettleRequest, settle), "40004", "ACQ.INVALID_PARAMETER")

# Pre-authorisation: freeze by payment code, release part, pay with
# auth_no, query; a second freeze left alone expires after 30 days.
status, guest = rest("POST", "/v1/users", ADMIN, {"name": "guest"})
assert rest("POST", "/v1/topups", guest["api_key"], {"amount": 100000, "bank": "ICBC"})[0] == 201


def held(key):
    balance = rest("GET", "/v1/balance", key)[1]
    return balance["available"], balance["held"]


freeze = AlipayFundAuthOrderFreezeModel()
freeze.auth_code = rest("POST", "/v1/payment-codes", guest["api_key"])[1]["auth_code"]
freeze.auth_code_type, freeze.out_order_no, freeze.out_request_no = "bar_code", "room-1", "room-1-f"
freeze.order_title, freeze.amount, freeze.product_code = "room deposit", "500.00", "PRE_AUTH"
frozen = call(sdk, AlipayFundAuthOrderFreezeRequest, freeze)
expect(frozen, "10000")
assert frozen["status"] == "SUCCESS" and frozen["amount"] == "500.00" and frozen["payer_user_id"] == guest["id"], frozen
assert frozen["auth_no"].startswith("frz_") and frozen["operation_id"].startswith("fop_"), frozen
assert held(guest["api_key"]) == (50000, 50000)
unfreeze = AlipayFundAuthOrderUnfreezeModel()
unfreeze.auth_no, unfreeze.out_request_no, unfreeze.amount, unfreeze.remark = frozen["auth_no"], "room-1-u", "100.00", "minibar untouched"
released = call(sdk, AlipayFundAuthOrderUnfreezeRequest, unfreeze)
expect(released, "10000")
assert released["amount"] == "100.00" and held(guest["api_key"]) == (60000, 40000), released
unfreeze.out_request_no, unfreeze.amount = "room-1-u2", "400.01"
expect(call(sdk, AlipayFundAuthOrderUnfreezeRequest, unfreeze), "40004", "REQUEST_AMOUNT_EXCEED")
charge = AlipayTradePayModel()
charge.out_trade_no, charge.subject, charge.total_amount = "room-1-bill", "two nights", "300.00"
charge.auth_no, charge.product_code, charge.auth_confirm_mode = frozen["auth_no"], "PRE_AUTH", "COMPLETE"
charged = call(sdk, AlipayTradePayRequest, charge)
expect(charged, "10000")
assert charged["total_amount"] == "300.00" and charged["buyer_user_id"] == guest["id"], charged
assert held(guest["api_key"]) == (70000, 0), "paid 300.00 of 400.00, the rest released"
detail = AlipayFundAuthOperationDetailQueryModel()
detail.auth_no, detail.out_request_no = frozen["auth_no"], "room-1-f"
details = call(sdk, AlipayFundAuthOperationDetailQueryRequest, detail)
expect(details, "10000")
assert (details["operation_type"], details["amount"], details["order_status"]) == ("FREEZE", "500.00", "FINISH"), details
assert (details["total_freeze_amount"], details["rest_amount"], details["total_pay_amount"]) == ("500.00", "0.00", "300.00"), details
detail = AlipayFundAuthOperationDetailQueryModel()
detail.out_order_no, detail.operation_id = "room-1", released["operation_id"]
assert call(sdk, AlipayFundAuthOperationDetailQueryRequest, detail)["operation_type"] == "UNFREEZE"
freeze.auth_code = rest("POST", "/v1/payment-codes", guest["api_key"])[1]["auth_code"]
freeze.out_order_no, freeze.out_request_no, freeze.amount = "room-2", "room-2-f", "200.00"
second = call(sdk, AlipayFundAuthOrderFreezeRequest, freeze)
expect(second, "10000")
assert held(guest["api_key"]) == (50000, 20000)
assert rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 30 * 86400})[0] == 200
assert held(guest["api_key"]) == (70000, 0), "expired: the money is back"
detail = AlipayFundAuthOperationDetailQueryModel()
detail.auth_no = second["auth_no"]
assert call(sdk, AlipayFundAuthOperationDetailQueryRequest, detail)["order_status"] == "CLOSED"
charge.out_trade_no, charge.auth_no, charge.total_amount = "room-2-bill", second["auth_no"], "1.00"
expect(call(sdk, AlipayTradePayRequest, charge), "40004", "ORDER_ALREADY_CLOSED")

# The day's bills as Alipay lays them out: the download URL fetched, the
# zip opened, its GBK CSV files parsed; their totals equal the REST bill's.
import csv  # noqa: E402
import io  # noqa: E402
import zipfile  # noqa: E402


def fen(yuan):
    if not yuan:
        return 0
    sign = -1 if yuan.startswith("-") else 1
    whole, cents = yuan.lstrip("+-").split(".")
    return sign * (int(whole) * 100 + int(cents))


def bill_rows(text):
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return list(csv.reader(lines))[1:]


request = urllib.request.Request(BASE + "/v1/bills?date=2013-11-11", headers={"Authorization": "Bearer " + merchant["api_key"]})
with urllib.request.urlopen(request) as response:
    rest_bill = response.read().decode()
rest_rows = bill_rows(rest_bill)
rest_total = sum(fen(row[4]) for row in rest_rows)
rest_of_trades = sum(fen(row[4]) for row in rest_rows if row[1].startswith("trade_") or row[1].startswith("campaign_discount"))
assert rest_rows, rest_bill
query = AlipayDataDataserviceBillDownloadurlQueryModel()
query.bill_type, query.bill_date = "trade", "2013-11-11"
answer = call(sdk, AlipayDataDataserviceBillDownloadurlQueryRequest, query)
expect(answer, "10000")
with urllib.request.urlopen(answer["bill_download_url"]) as response:
    archive = zipfile.ZipFile(io.BytesIO(response.read()))
names = archive.namelist()
assert names == [merchant["app_id"] + "_20131111_业务明细.csv", merchant["app_id"] + "_20131111_业务明细(汇总).csv"], names
detail = archive.read(names[0]).decode("gbk")
assert detail.startswith("#支付宝业务明细查询"), detail
rows = bill_rows(detail)
assert rows and all(len(row) == 25 for row in rows), detail
assert sum(fen(row[12]) + fen(row[22]) + fen(row[23]) for row in rows) == rest_of_trades, (detail, rest_bill)
summary = archive.read(names[1]).decode("gbk")
total = next(line for line in summary.splitlines() if line.startswith("合计（元）"))
assert fen(total.split(",")[-1]) == rest_of_trades, summary
query.bill_type = "signcustomer"
answer = call(sdk, AlipayDataDataserviceBillDownloadurlQueryRequest, query)
with urllib.request.urlopen(answer["bill_download_url"]) as response:
    archive = zipfile.ZipFile(io.BytesIO(response.read()))
rows = bill_rows(archive.read(archive.namelist()[0]).decode("gbk"))
assert len(rows) == len(rest_rows) and sum(fen(row[6]) + fen(row[7]) for row in rows) == rest_total, rows
query.bill_date = "2099-01"
expect(call(sdk, AlipayDataDataserviceBillDownloadurlQueryRequest, query), "40004", "isp.bill_not_exist")

print("python sdk: all gateway checks passed")
