// Drives zhifu's /gateway.do with Alipay's official Node.js SDK (alipay-sdk).
// Run by crates/zhifu/tests/gateway.rs against a real `zhifu serve --clock simulated`:
//     node node_sdk.mjs <base url> <admin key>
// Every exec() passes validateSign, so the SDK verifies each answer's
// signature with the platform's key (and throws if it does not verify).

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import { inflateRawSync } from 'node:zlib';
import { AlipaySdk } from 'alipay-sdk';

const [base, admin] = process.argv.slice(2);

async function rest(method, path, key, body) {
  const response = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return [response.status, await response.json()];
}

const keys = () => generateKeyPairSync('rsa', {
  modulusLength: 2048,
  publicKeyEncoding: { type: 'spki', format: 'pem' },
  privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
});

const app = keys();
let [status, merchant] = await rest('POST', '/v1/merchants', admin, { name: 'node shop', app_public_key: app.publicKey });
assert.equal(status, 201, JSON.stringify(merchant));
const sdkWith = (privateKey) => new AlipaySdk({
  appId: merchant.app_id,
  privateKey,
  alipayPublicKey: merchant.alipay_public_key,
  gateway: `${base}/gateway.do`,
  keyType: 'PKCS1',
  camelcase: false,
});
const sdk = sdkWith(app.privateKey);
const exec = (method, bizContent, extra = {}) => sdk.exec(method, { bizContent, ...extra }, { validateSign: true });

let buyer;
[status, buyer] = await rest('POST', '/v1/users', admin, { name: 'node buyer' });
assert.equal(status, 201);
assert.equal((await rest('POST', '/v1/topups', buyer.api_key, { amount: 50000, bank: 'ICBC' }))[0], 201);
const [, code] = await rest('POST', '/v1/payment-codes', buyer.api_key);

// A till payment, then the same code again.
const paid = await exec('alipay.trade.pay', { out_trade_no: 'n-1', scene: 'bar_code', auth_code: code.auth_code, subject: 'tea', total_amount: '20.00' });
assert.equal(paid.code, '10000', JSON.stringify(paid));
assert.equal(paid.buyer_user_id, buyer.id);
const reused = await exec('alipay.trade.pay', { out_trade_no: 'n-2', scene: 'bar_code', auth_code: code.auth_code, subject: 'tea', total_amount: '1.00' });
assert.equal(reused.sub_code, 'ACQ.PAYMENT_AUTH_CODE_INVALID');

// Query, partial and repeated refunds, one too many.
assert.equal((await exec('alipay.trade.query', { out_trade_no: 'n-1' })).trade_status, 'TRADE_SUCCESS');
const refund = (amount, no) => exec('alipay.trade.refund', { out_trade_no: 'n-1', refund_amount: amount, out_request_no: no });
assert.equal((await refund('5.00', 'a')).fund_change, 'Y');
assert.equal((await refund('5.00', 'a')).fund_change, 'N');
assert.equal((await refund('15.01', 'b')).sub_code, 'ACQ.REFUND_AMT_NOT_EQUAL_TOTAL');
const last = await refund('14.80', 'b');
assert.equal(last.refund_fee, '19.80', JSON.stringify(last));
// Each refund gave back its share of the 0.12 fee (0.11 so far): the merchant
// holds 0.19, what the last 0.20 costs it less that refund's 0.01 of fee.
// Once it has withdrawn them, it cannot refund.
assert.equal((await rest('POST', '/v1/withdrawals', merchant.api_key, { amount: 19 }))[0], 201);
assert.equal((await refund('0.20', 'c')).sub_code, 'ACQ.SELLER_BALANCE_NOT_ENOUGH');

// Precreate with a notify_url; the buyer pays; the notification verifies
// with the SDK's own check and is acknowledged with "success".
const notifications = [];
const receiver = http.createServer((request, response) => {
  let body = '';
  request.on('data', (chunk) => { body += chunk; });
  request.on('end', () => {
    notifications.push(Object.fromEntries(new URLSearchParams(body)));
    response.end('success');
  });
});
await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
const notifyUrl = `http://127.0.0.1:${receiver.address().port}/notify`;
const created = await exec('alipay.trade.precreate', { out_trade_no: 'n-qr', total_amount: '3.21', subject: 'cake' }, { notify_url: notifyUrl });
assert.equal(created.code, '10000');
assert.ok(created.qr_code.includes('/qr/'), created.qr_code);
const tradeNo = created.trade_no;
assert.equal((await rest('POST', `/v1/trades/${tradeNo}/pay`, buyer.api_key, {}))[0], 200);
for (let waited = 0; notifications.length === 0 && waited < 100; waited++) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
assert.equal(notifications.length, 1, 'one notification');
assert.equal(notifications[0].trade_status, 'TRADE_SUCCESS');
assert.equal(notifications[0].out_trade_no, 'n-qr');
assert.ok(sdk.checkNotifySignV2(notifications[0]), 'the notification verifies');
assert.ok(!sdk.checkNotifySignV2({ ...notifications[0], total_amount: '321.00' }), 'a changed one does not');
receiver.close();

// Close an unpaid trade; odd amounts; a foreign signature.
await exec('alipay.trade.precreate', { out_trade_no: 'n-close', total_amount: '1.00', subject: 'x' });
assert.equal((await exec('alipay.trade.close', { out_trade_no: 'n-close' })).code, '10000');
assert.equal((await exec('alipay.trade.query', { out_trade_no: 'n-close' })).trade_status, 'TRADE_CLOSED');
for (const amount of ['1.001', '-1', '1e3']) {
  const odd = await exec('alipay.trade.precreate', { out_trade_no: `odd${amount}`, total_amount: amount, subject: 'x' });
  assert.equal(odd.sub_code, 'isv.invalid-parameter', JSON.stringify(odd));
}
const stranger = sdkWith(keys().privateKey);
const refused = await stranger.exec('alipay.trade.query', { bizContent: { out_trade_no: 'n-1' } }, { validateSign: true });
assert.equal(refused.sub_code, 'isv.invalid-signature');

// Profit sharing: bind a receiver, settle part of a paid trade, query the
// settle; more than the trade left is refused with Alipay's sub-code.
let carrier;
[status, carrier] = await rest('POST', '/v1/users', admin, { name: 'node carrier' });
assert.equal(status, 201);
const [, splitCode] = await rest('POST', '/v1/payment-codes', buyer.api_key);
const shared = await exec('alipay.trade.pay', { out_trade_no: 'n-split', scene: 'bar_code', auth_code: splitCode.auth_code, subject: 'tea', total_amount: '30.00' });
assert.equal(shared.code, '10000', JSON.stringify(shared));
const receivers = [{ type: 'userId', account: carrier.id }];
assert.equal((await exec('alipay.trade.royalty.relation.bind', { out_request_no: 'b-1', receiver_list: receivers })).result_code, 'SUCCESS');
const part = (amount) => [{ royalty_type: 'transfer', trans_in_type: 'userId', trans_in: carrier.id, amount }];
const settled = await exec('alipay.trade.order.settle', { out_request_no: 'st-1', trade_no: shared.trade_no, royalty_parameters: part('5.00') });
assert.equal(settled.code, '10000', JSON.stringify(settled));
const detail = await exec('alipay.trade.order.settle.query', { settle_no: settled.settle_no });
assert.deepEqual(detail.royalty_detail_list.map((d) => [d.trans_in, d.amount, d.state]), [[carrier.id, '5.00', 'SUCCESS']]);
const over = await exec('alipay.trade.order.settle', { out_request_no: 'st-2', trade_no: shared.trade_no, royalty_parameters: part('30.00') });
assert.equal(over.sub_code, 'ACQ.ALLOC_AMOUNT_VALIDATE_ERROR', JSON.stringify(over));
assert.equal((await rest('GET', '/v1/balance', carrier.api_key))[1].available, 500);

// Pre-authorisation: freeze by payment code, release part, pay the rest
// with auth_no (COMPLETE), query; over what is frozen is refused.
const [, guest] = await rest('POST', '/v1/users', admin, { name: 'node guest' });
assert.equal((await rest('POST', '/v1/topups', guest.api_key, { amount: 50000, bank: 'ICBC' }))[0], 201);
const [, guestCode] = await rest('POST', '/v1/payment-codes', guest.api_key);
const frozen = await exec('alipay.fund.auth.order.freeze', { auth_code: guestCode.auth_code, auth_code_type: 'bar_code', out_order_no: 'n-room', out_request_no: 'n-room-f', order_title: 'deposit', amount: '300.00', product_code: 'PRE_AUTH' });
assert.equal(frozen.code, '10000', JSON.stringify(frozen));
assert.equal(frozen.payer_user_id, guest.id);
const authNo = frozen.auth_no;
const released = await exec('alipay.fund.auth.order.unfreeze', { auth_no: authNo, out_request_no: 'n-room-u', amount: '50.00', remark: 'x' });
assert.equal(released.code, '10000', JSON.stringify(released));
const tooMuch = await exec('alipay.trade.pay', { out_trade_no: 'n-room-x', subject: 'stay', total_amount: '250.01', auth_no: authNo, product_code: 'PRE_AUTH' });
assert.equal(tooMuch.sub_code, 'REQUEST_AMOUNT_EXCEED', JSON.stringify(tooMuch));
const stay = await exec('alipay.trade.pay', { out_trade_no: 'n-room-bill', subject: 'stay', total_amount: '200.00', auth_no: authNo, product_code: 'PRE_AUTH', auth_confirm_mode: 'COMPLETE' });
assert.equal(stay.code, '10000', JSON.stringify(stay));
const query = await exec('alipay.fund.auth.operation.detail.query', { auth_no: authNo, out_request_no: 'n-room-u' });
assert.equal(query.code, '10000', JSON.stringify(query));
assert.deepEqual(
  [query.operation_type, query.order_status, query.rest_amount, query.total_pay_amount],
  ['UNFREEZE', 'FINISH', '0.00', '200.00'],
);
const guestBalance = (await rest('GET', '/v1/balance', guest.api_key))[1];
assert.deepEqual([guestBalance.available, guestBalance.held], [30000, 0]);

// The day's business bill as Alipay lays it out: the URL fetched, the zip
// read (its local headers), the GBK CSV parsed; its net equals the REST
// bill's trade movements.
function unzip(bytes) {
  const files = [];
  let at = 0;
  while (bytes.readUInt32LE(at) === 0x04034b50) {
    const [method, size] = [bytes.readUInt16LE(at + 8), bytes.readUInt32LE(at + 18)];
    const [nameLength, extraLength] = [bytes.readUInt16LE(at + 26), bytes.readUInt16LE(at + 28)];
    const name = bytes.subarray(at + 30, at + 30 + nameLength).toString('utf8');
    const start = at + 30 + nameLength + extraLength;
    const data = bytes.subarray(start, start + size);
    files.push([name, method === 8 ? inflateRawSync(data) : data]);
    at = start + size;
  }
  return files;
}
const fen = (yuan) => (yuan ? Math.round(Number(yuan) * 100) : 0);
const rowsOf = (text) => text.split('\n').filter((line) => line && !line.startsWith('#')).slice(1).map((line) => line.split(','));
assert.equal((await rest('POST', '/v1/admin/clock', admin, { advance_seconds: 86400 }))[0], 200);
const restBill = await (await fetch(`${base}/v1/bills?date=2013-11-11`, { headers: { authorization: `Bearer ${merchant.api_key}` } })).text();
const ofTrades = rowsOf(restBill).filter((row) => row[1].startsWith('trade_') || row[1].startsWith('campaign_discount')).reduce((sum, row) => sum + fen(row[4]), 0);
const billUrl = await exec('alipay.data.dataservice.bill.downloadurl.query', { bill_type: 'trade', bill_date: '2013-11-11' });
assert.equal(billUrl.code, '10000', JSON.stringify(billUrl));
const files = unzip(Buffer.from(await (await fetch(billUrl.bill_download_url)).arrayBuffer()));
assert.deepEqual(files.map(([name]) => name), [`${merchant.app_id}_20131111_业务明细.csv`, `${merchant.app_id}_20131111_业务明细(汇总).csv`]);
const businessDetail = new TextDecoder('gbk').decode(files[0][1]);
assert.ok(businessDetail.startsWith('#支付宝业务明细查询'), businessDetail);
const businessRows = rowsOf(businessDetail);
assert.ok(businessRows.length > 0 && businessRows.every((row) => row.length === 25), businessDetail);
assert.equal(businessRows.reduce((sum, row) => sum + fen(row[12]) + fen(row[22]) + fen(row[23]), 0), ofTrades, businessDetail);

console.log('node sdk: all gateway checks passed');
