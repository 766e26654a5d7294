"""A merchant website's checkout through zhifu's cashier, built with Alipay's
official Python SDK (alipay-sdk-python): `page_execute` makes the signed
page.pay URL, a buyer's HTTP session follows it to the cashier, signs in,
pays, and lands on the merchant's return_url, whose parameters verify with
the SDK's own `verify_with_rsa`. (Without a browser: crates/zhifu/tests/cashier.rs
runs it; the pages' behaviour in Chromium is a further test.)

    python3 cashier_sdk.py <base url> <admin key>
"""

import html.parser
import http.cookiejar
import json
import sys
import urllib.parse
import urllib.request

from Crypto.PublicKey import RSA

from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayTradeAppPayModel import AlipayTradeAppPayModel
from alipay.aop.api.domain.AlipayTradePagePayModel import AlipayTradePagePayModel
from alipay.aop.api.domain.AlipayTradeWapPayModel import AlipayTradeWapPayModel
from alipay.aop.api.request.AlipayTradeAppPayRequest import AlipayTradeAppPayRequest
from alipay.aop.api.request.AlipayTradePagePayRequest import AlipayTradePagePayRequest
from alipay.aop.api.request.AlipayTradeWapPayRequest import AlipayTradeWapPayRequest
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa

BASE, ADMIN = sys.argv[1], sys.argv[2]
RETURN_URL = "https://shop.example/alipay/return"


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


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """A buyer's browser without JavaScript: cookies kept, redirects seen."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def open(self, url, form=None, headers=None):
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(url if url.startswith("http") else BASE + url, data=data)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with self.opener.open(request) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()


class Fields(html.parser.HTMLParser):
    """The hidden fields of a page's forms (and the last form's action)."""

    def __init__(self, text):
        super().__init__()
        self.values, self.action = {}, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.action = attrs.get("action")
        if tag == "input" and attrs.get("type") == "hidden":
            self.values[attrs["name"]] = attrs.get("value", "")


# A merchant website with its app key, and a buyer with a login and money.
app_key = RSA.generate(2048)
status, merchant = rest("POST", "/v1/merchants", ADMIN, {"name": "web shop", "app_public_key": app_key.publickey().export_key("PEM").decode()})
assert status == 201, merchant
config = AlipayClientConfig()
config.server_url = BASE + "/gateway.do"
config.app_id = merchant["app_id"]
config.app_private_key = bare(app_key.export_key("PEM", pkcs=1).decode())
config.alipay_public_key = bare(merchant["alipay_public_key"])
sdk = DefaultAlipayClient(alipay_client_config=config)
alipay_public = bare(merchant["alipay_public_key"])
status, buyer = rest("POST", "/v1/users", ADMIN, {"name": "buyer", "login": "lin@example", "password": "a long passphrase"})
assert status == 201, buyer
assert rest("POST", "/v1/topups", buyer["api_key"], {"amount": 100000, "bank": "ICBC"})[0] == 201


def page_pay(out_trade_no, amount, request_class=AlipayTradePagePayRequest, model_class=AlipayTradePagePayModel,
             **extra):
    model = model_class()
    model.out_trade_no, model.total_amount, model.subject = out_trade_no, amount, "tea"
    for name, value in extra.items():
        setattr(model, name, value)
    model.product_code = "FAST_INSTANT_TRADE_PAY" if model_class is AlipayTradePagePayModel else "QUICK_WAP_WAY"
    request = request_class(biz_model=model)
    request.return_url = RETURN_URL
    return sdk.page_execute(request, http_method="GET")


# The website sends the browser to zhifu: the cashier shows the order.
browser = Browser()
status, headers, body = browser.open(page_pay("web-1", "12.34"))
assert status == 303, (status, body)
assert status == 303 and headers["location"].startswith("/cashier?t="), (status, headers)
cashier = headers["location"]
status, headers, page = browser.open(cashier)
assert status == 200 and "web shop" in page and "12.34" in page, page
assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"], headers
assert "HttpOnly" in headers["set-cookie"] and "SameSite=Lax" in headers["set-cookie"], headers
fields = Fields(page).values

# A wrong password: a clear page, nothing paid.
status, _, page = browser.open("/cashier/sign-in", dict(fields, login="lin@example", password="not the password"))
assert status == 401 and "Wrong login or password" in page, (status, page)
# A cross-site POST (another browser: no visit cookie, a guessed token) is refused.
stranger = Browser()
status, _, _ = stranger.open("/cashier/sign-in", dict(fields, login="lin@example", password="a long passphrase"))
assert status == 403, status

# Signed in: the balance, and pay.
status, headers, _ = browser.open("/cashier/sign-in", dict(fields, login="lin@example", password="a long passphrase"))
assert status == 303, status
status, _, page = browser.open(cashier)
assert status == 200 and "1000.00" in page, page
fields = Fields(page).values
status, headers, page = browser.open("/cashier/pay", dict(fields, source="balance"))
assert status == 303 and headers["location"].startswith(RETURN_URL + "?"), (status, page)
returned = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(headers["location"]).query))
assert returned["out_trade_no"] == "web-1" and returned["total_amount"] == "12.34", returned
assert returned["method"] == "alipay.trade.page.pay.return" and returned["app_id"] == merchant["app_id"], returned
signature = returned.pop("sign")
returned.pop("sign_type")
assert verify_with_rsa(alipay_public, get_sign_content(returned).encode(), signature), returned

# A second click on "pay": paid once, and the same way on.
status, headers, _ = browser.open("/cashier/pay", dict(fields, source="balance"))
assert status == 303 and headers["location"].startswith(RETURN_URL), (status, headers)
status, balance = rest("GET", "/v1/balance", buyer["api_key"])
assert balance["available"] == 100000 - 1234, balance

# The same out_trade_no again: the same trade, now paid.
status, headers, _ = browser.open(page_pay("web-1", "12.34"))
status, _, page = browser.open(headers["location"])
assert "Paid" in page, page

# wap.pay on a phone: the phone page; not enough money: a clear 422 page.
status, headers, _ = browser.open(page_pay("wap-1", "5000.00", AlipayTradeWapPayRequest, AlipayTradeWapPayModel))
assert status == 303 and headers["location"].endswith("&phone=1"), headers
status, _, page = browser.open(headers["location"], headers={"User-Agent": "Mozilla/5.0 (iPhone) Mobile"})
assert status == 200 and 'class="phone"' in page and "qr.svg" not in page, page
fields = Fields(page).values
status, _, page = browser.open("/cashier/pay", dict(fields, source="balance"))
assert status == 422 and "Not enough money" in page, (status, page)

# wap.pay's quit_url: a way back while the order waits.
status, headers, _ = browser.open(page_pay("wap-2", "1.00", AlipayTradeWapPayRequest, AlipayTradeWapPayModel,
                                           quit_url="https://shop.example/cart"))
status, _, page = browser.open(headers["location"])
assert 'href="https://shop.example/cart"' in page, page

# time_expire: past is refused; two minutes ahead closes the trade after them.
status, _, page = browser.open(page_pay("exp-1", "1.00", time_expire="2013-11-10 00:00:00"))
assert status == 400 and "time_expire has passed" in page, (status, page)
status, headers, _ = browser.open(page_pay("exp-2", "1.00", time_expire="2013-11-11 00:02:00"))
assert status == 303, status
expiring = headers["location"]
assert rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 180})[0] == 200
status, _, page = browser.open(expiring)
assert status == 409 and "closed" in page, (status, page)

# A bad signature: an error page with Alipay's sub-code, never a 5xx.
tampered = page_pay("bad-1", "1.00").replace("total_amount%22%3A%221.00", "total_amount%22%3A%220.01")
status, _, page = browser.open(tampered)
assert status == 400 and "isv.invalid-signature" in page, (status, page)
# A forged checkout token: refused.
status, _, page = browser.open("/cashier?t=eyJ0cmFkZSI6MX0.00")
assert status == 400, status

# The SDK's default: an auto-submitting POST form (common parameters in the
# action's query, biz_content in the body) reaches the same cashier.
request = AlipayTradePagePayRequest(biz_model=AlipayTradePagePayModel())
request.biz_model.out_trade_no, request.biz_model.total_amount, request.biz_model.subject = "form-1", "2.00", "tea"
request.biz_model.product_code = "FAST_INSTANT_TRADE_PAY"
form = Fields(sdk.page_execute(request))
assert "biz_content" in form.values and form.action.startswith(BASE + "/gateway.do?"), form.values
status, headers, _ = browser.open(form.action, form.values)
assert status == 303 and headers["location"].startswith("/cashier?t="), (status, headers)
status, _, page = browser.open(headers["location"])
assert status == 200 and "2.00" in page, (status, page)

# app.pay: the app opens its signed order string on the gateway; the phone
# cashier takes it from there and pays it.
model = AlipayTradeAppPayModel()
model.out_trade_no, model.total_amount, model.subject, model.product_code = "app-1", "3.00", "tea", "QUICK_MSECURITY_PAY"
order_string = sdk.sdk_execute(AlipayTradeAppPayRequest(biz_model=model))
status, headers, _ = browser.open("/gateway.do?" + order_string)
assert status == 303 and headers["location"].endswith("&phone=1"), (status, headers)
status, _, page = browser.open(headers["location"])
assert status == 200 and 'class="phone"' in page and "3.00" in page, page
status, _, page = browser.open("/cashier/pay", dict(Fields(page).values, source="balance"))
assert status == 200 and "Paid" in page, (status, page)
status, balance = rest("GET", "/v1/balance", buyer["api_key"])
assert balance["available"] == 100000 - 1234 - 300, balance

# Chinese by Accept-Language.
status, _, page = browser.open(cashier, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
assert 'lang="zh-CN"' in page and "付款成功" in page, page

# A coupon of the shop's campaign is offered at checkout and takes its
# discount off, once; a coupon that is not the buyer's is refused.
status, campaign = rest("POST", "/v1/campaigns", merchant["api_key"], {
    "name": "Tea week", "budget": 500, "discount": 100, "min_spend": 0, "per_user_limit": 5,
    "starts_at": "2013-11-10T00:00:00+08:00", "ends_at": "2013-11-30T00:00:00+08:00"})
assert status == 201, campaign
status, coupon = rest("POST", f"/v1/campaigns/{campaign['id']}/coupons", merchant["api_key"], {"user": buyer["id"]})
assert status == 201, coupon
status, headers, _ = browser.open(page_pay("cpn-1", "4.00"))
with_coupon = headers["location"]
status, _, page = browser.open(with_coupon)
assert f'value="{coupon["id"]}"' in page and "Tea week" in page and "1.00" in page, page
fields = Fields(page).values
before = rest("GET", "/v1/balance", buyer["api_key"])[1]["available"]
status, _, page = browser.open("/cashier/pay", dict(fields, source="balance", coupon="cpn_" + "0" * 32))
assert status == 422 and "coupon cannot be used" in page, (status, page)
assert rest("GET", "/v1/balance", buyer["api_key"])[1]["available"] == before, "nothing paid"
status, headers, _ = browser.open("/cashier/pay", dict(fields, source="balance", coupon=coupon["id"]))
assert status == 303 and headers["location"].startswith(RETURN_URL), (status, headers)
assert before - rest("GET", "/v1/balance", buyer["api_key"])[1]["available"] == 300, "4.00 less the coupon's 1.00"
status, headers, _ = browser.open(page_pay("cpn-2", "4.00"))
waiting = headers["location"]
status, _, page = browser.open(waiting)
assert status == 200 and coupon["id"] not in page, "a used coupon is not offered again"

# Sign out: the cookie is cleared, and the old cookie, replayed by anyone,
# no longer signs in.
session = next(c.value for c in browser.jar if c.name == "zhifu_buyer")
status, headers, _ = browser.open("/cashier/sign-out", Fields(page).values)
assert status == 303 and "zhifu_buyer=;" in headers["set-cookie"], (status, headers)
status, _, page = browser.open(waiting)
assert 'name="password"' in page, "signed out"
status, _, page = Browser().open(waiting, headers={"Cookie": "zhifu_buyer=" + session})
assert 'name="password"' in page, "a signed-out cookie is refused"


print("all cashier checks passed")
