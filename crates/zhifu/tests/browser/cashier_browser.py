"""The cashier in a real browser: Debian's Chromium driven by Playwright
(PyPI `playwright`, launched with executable_path=/usr/bin/chromium; no
browser download). Run by crates/zhifu/tests/cashier_browser.rs:

    python3 cashier_browser.py <base url> <admin key> <screenshot dir>

A merchant page built with the official Python SDK's page.pay, opened in the
browser: sign in (a wrong password first), pay with a double click (paid
once), arrive at the merchant's return_url whose parameters verify with the
SDK's own check, and the asynchronous notification arrives and verifies;
wap.pay in a phone viewport; the desktop QR code paid from a phone page,
the desktop following by itself; not enough money; an expired trade.
"""

import http.server
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request

from Crypto.PublicKey import RSA
from playwright.sync_api import sync_playwright

from accessibility import ACCESSIBILITY

from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayTradePagePayModel import AlipayTradePagePayModel
from alipay.aop.api.domain.AlipayTradeWapPayModel import AlipayTradeWapPayModel
from alipay.aop.api.request.AlipayTradePagePayRequest import AlipayTradePagePayRequest
from alipay.aop.api.request.AlipayTradeWapPayRequest import AlipayTradeWapPayRequest
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa

BASE, ADMIN, SHOTS = sys.argv[1], sys.argv[2], sys.argv[3]
CHROMIUM = os.environ.get("ZHIFU_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a long passphrase"


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
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


# The merchant's website: /return (the browser lands here), /notify (zhifu posts here).
returns, notifications = [], []


class Shop(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/return"):
            returns.append(dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query)))
        body = b"<!doctype html><title>Shop</title><h1>Back at the shop</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        notifications.append(dict(urllib.parse.parse_qsl(self.rfile.read(length).decode())))
        self.send_response(200)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"success")

    def log_message(self, *args):
        pass


shop = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Shop)
threading.Thread(target=shop.serve_forever, daemon=True).start()
SHOP = "http://127.0.0.1:%d" % shop.server_address[1]

app_key = RSA.generate(2048)
status, merchant = rest("POST", "/v1/merchants", ADMIN, {"name": "Tea House", "app_public_key": app_key.publickey().export_key("PEM").decode()})
assert status == 201, merchant
config = AlipayClientConfig()
config.server_url = BASE + "/gateway.do"
config.app_id = merchant["app_id"]
config.app_private_key = bare(app_key.export_key("PEM", pkcs=1).decode())
config.alipay_public_key = bare(merchant["alipay_public_key"])
sdk = DefaultAlipayClient(alipay_client_config=config)
alipay_public = bare(merchant["alipay_public_key"])


def buyer(login, money):
    status, made = rest("POST", "/v1/users", ADMIN, {"name": login, "login": login, "password": PASSWORD})
    assert status == 201, made
    if money:
        assert rest("POST", "/v1/topups", made["api_key"], {"amount": money, "bank": "ICBC"})[0] == 201
    return made


def checkout_url(out_trade_no, amount, wap=False, timeout=None):
    model = AlipayTradeWapPayModel() if wap else AlipayTradePagePayModel()
    model.out_trade_no, model.total_amount, model.subject = out_trade_no, amount, "Longjing tea"
    model.passback_params = urllib.parse.quote("order=" + out_trade_no)
    model.product_code = "QUICK_WAP_WAY" if wap else "FAST_INSTANT_TRADE_PAY"
    if timeout:
        model.timeout_express = timeout
    request = (AlipayTradeWapPayRequest if wap else AlipayTradePagePayRequest)(biz_model=model)
    request.return_url = SHOP + "/return"
    request.notify_url = SHOP + "/notify"
    return sdk.page_execute(request, http_method="GET")


def verified(params):
    params = dict(params)
    signature = params.pop("sign")
    params.pop("sign_type", None)
    return verify_with_rsa(alipay_public, get_sign_content(params).encode(), signature)


def wait_for(found, what, seconds=15):
    for _ in range(seconds * 10):
        if found():
            return
        time.sleep(0.1)
    raise AssertionError("waited for " + what)


def accessible(page):
    problems = page.evaluate(ACCESSIBILITY)
    assert not problems, problems


def shot(page, name):
    accessible(page)
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


lin = buyer("lin", 100000)
# A platform campaign's coupon for lin: offered at checkout, 2.00 off.
status, campaign = rest("POST", "/v1/campaigns", ADMIN, {
    "name": "Double Eleven", "budget": 10000, "discount": 200, "min_spend": 1000, "per_user_limit": 1,
    "starts_at": "2013-11-10T00:00:00+08:00", "ends_at": "2013-11-30T00:00:00+08:00"})
assert status == 201, campaign
status, coupon = rest("POST", f"/v1/campaigns/{campaign['id']}/coupons", ADMIN, {"user": lin["id"]})
assert status == 201, coupon
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}

with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

    # The desktop cashier: the order, the sign-in form and the QR code.
    desktop = browser.new_context(viewport={"width": 1200, "height": 800})
    page = desktop.new_page()
    page.goto(checkout_url("web-1", "12.34"))
    assert page.url.startswith(BASE + "/cashier?t="), page.url
    assert page.locator("h1").inner_text() == "Tea House"
    assert "12.34" in page.locator(".amount").inner_text()
    assert page.locator("img[src^='/cashier/qr.svg']").is_visible()
    assert page.get_by_label("Login").is_visible() and page.get_by_label("Password").is_visible()
    shot(page, "cashier-desktop-sign-in")

    # A wrong password: a clear message, still the sign-in form.
    page.get_by_label("Login").fill("lin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong login or password" in page.locator(".error").inner_text()
    shot(page, "cashier-wrong-password")

    # Signed in: the balance; a double click on pay pays once.
    page.get_by_label("Login").fill("lin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert "1000.00" in page.locator("form").first.inner_text()
    assert page.get_by_label("No coupon").is_checked()
    page.get_by_label("Double Eleven: off ¥2.00").check()
    shot(page, "cashier-desktop-pay")
    page.locator("#pay").dblclick()
    page.wait_for_url(SHOP + "/return?*")
    back = returns[-1]
    assert back["out_trade_no"] == "web-1" and back["total_amount"] == "12.34", back
    assert back["method"] == "alipay.trade.page.pay.return" and verified(back), back
    status, balance = rest("GET", "/v1/balance", lin["api_key"])
    assert balance["available"] == 100000 - 1234 + 200, ("paid once, less the coupon", balance)
    wait_for(lambda: any(n.get("out_trade_no") == "web-1" for n in notifications), "the notification")
    notice = next(n for n in notifications if n.get("out_trade_no") == "web-1")
    assert notice["trade_status"] == "TRADE_SUCCESS" and verified(notice), notice
    assert notice["passback_params"] == urllib.parse.quote("order=web-1"), ("passed back unchanged", notice)

    # wap.pay in a phone's viewport: no QR code, large touch targets.
    phone = browser.new_context(**PHONE)
    mobile = phone.new_page()
    mobile.goto(checkout_url("wap-1", "3.21", wap=True))
    assert mobile.locator("body.phone").count() == 1 and mobile.locator("img[src^='/cashier/qr.svg']").count() == 0
    assert mobile.get_by_role("button", name="Sign in").bounding_box()["height"] >= 44
    shot(mobile, "cashier-phone-sign-in")
    mobile.get_by_label("Login").fill("lin")
    mobile.get_by_label("Password").fill(PASSWORD)
    mobile.get_by_role("button", name="Sign in").click()
    shot(mobile, "cashier-phone-pay")
    mobile.locator("#pay").click()
    mobile.wait_for_url(SHOP + "/return?*")
    assert returns[-1]["method"] == "alipay.trade.wap.pay.return" and verified(returns[-1]), returns[-1]

    # The desktop's QR code, paid from a phone: the desktop goes on by itself.
    waiting = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    waiting.goto(checkout_url("qr-1", "8.00"))
    token = waiting.locator("#qr-status").get_attribute("data-t")
    scanner = browser.new_context(**PHONE).new_page()
    scanner.goto(BASE + "/qr/" + token)
    assert "/cashier?t=" in scanner.url and scanner.url.endswith("&phone=1"), scanner.url
    scanner.get_by_label("Login").fill("lin")
    scanner.get_by_label("Password").fill(PASSWORD)
    scanner.get_by_role("button", name="Sign in").click()
    scanner.locator("#pay").click()
    waiting.wait_for_url(SHOP + "/return?*", timeout=15000)
    assert returns[-1]["out_trade_no"] == "qr-1" and verified(returns[-1]), returns[-1]

    # Not enough money: a clear page, nothing paid.
    poor = buyer("poor", 100)
    tight = browser.new_context().new_page()
    tight.goto(checkout_url("big-1", "99.00"))
    tight.get_by_label("Login").fill("poor")
    tight.get_by_label("Password").fill(PASSWORD)
    tight.get_by_role("button", name="Sign in").click()
    tight.locator("#pay").click()
    assert "Not enough money" in tight.locator(".error").inner_text()
    shot(tight, "cashier-not-enough-money")
    assert rest("GET", "/v1/balance", poor["api_key"])[1]["available"] == 100

    # A trade left unpaid past its timeout: closed, said so.
    late = browser.new_context().new_page()
    url = checkout_url("late-1", "1.00", timeout="1m")
    late.goto(url)
    assert rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 120})[0] == 200
    late.reload()
    assert "closed" in late.locator(".notice").inner_text()
    shot(late, "cashier-closed")

    # The same order's page in Chinese.
    chinese = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"}).new_page()
    chinese.goto(checkout_url("zh-1", "6.60"))
    assert chinese.locator("html").get_attribute("lang") == "zh-CN" and "登录" in chinese.content()
    shot(chinese, "cashier-chinese")
    browser.close()

shop.shutdown()
print("all browser checks passed")
