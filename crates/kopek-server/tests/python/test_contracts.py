"""A non-Rust client against both contracts, health and reflection.

Run by the Rust test `python::a_python_grpcio_client_speaks_both_contracts`, which installs
grpcio into a virtualenv, generates stubs from proto/contracts (verbatim copies of
shared/spec) into PYTHONPATH, starts `kopek serve` and sets KOPEK_GRPC_ADDR.
"""

import os
import unittest
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import payment_pb2
import payment_pb2_grpc
import transaction_pb2
import transaction_pb2_grpc

ADDRESS = os.environ["KOPEK_GRPC_ADDR"]


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Contracts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(ADDRESS)
        grpc.channel_ready_future(cls.channel).result(timeout=30)
        cls.transactions = transaction_pb2_grpc.TransactionServiceStub(cls.channel)
        cls.payments = payment_pb2_grpc.PaymentServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def stream(self, transactions):
        return list(self.transactions.StreamTransactions(iter(transactions), timeout=60))

    def test_streamed_transactions_get_one_verdict_each_in_order(self):
        user = unique("py")
        sent = [
            transaction_pb2.Transaction(transactionId=unique("t"), userId=user, category="topup",
                                        amount=100.0, currency="USD", timestamp="2024-01-01T09:00:00Z"),
            transaction_pb2.Transaction(transactionId=unique("t"), userId=user, category="Food",
                                        amount=19.99, currency="USD", timestamp="2024-01-01T12:00:00"),
            transaction_pb2.Transaction(transactionId=unique("t"), userId=user, category="Transport",
                                        amount=500.0, currency="USD"),
            transaction_pb2.Transaction(transactionId=unique("t"), userId=user, category="Food",
                                        amount=1.0, currency="NOPE"),
        ]
        sent.append(sent[1])  # the same id and content again: a replay
        answers = self.stream(sent)
        self.assertEqual([a.transactionId for a in answers], [t.transactionId for t in sent])
        self.assertEqual([a.status for a in answers], ["success", "success", "failure", "failure", "success"])
        self.assertEqual(answers[0].message, "processed")
        self.assertTrue(answers[2].message.startswith("INSUFFICIENT_FUNDS: "), answers[2].message)
        self.assertTrue(answers[3].message.startswith("UNKNOWN_CURRENCY: "), answers[3].message)
        self.assertIn("replay", answers[4].message)
        balance = self.payments.GetAccountBalance(
            payment_pb2.GetAccountBalanceRequest(account_id=f"user:{user}:USD"))
        self.assertEqual(balance.available_balance_cents, 10000 - 1999)
        self.assertEqual(balance.currency, "USD")

    def test_payments_authorize_decline_and_replay(self):
        user = unique("payer")
        # A deposit opens the payer's account; a purchase opens the payee, a category account.
        self.stream([
            transaction_pb2.Transaction(transactionId=unique("t"), userId=user, category="deposit",
                                        amount=50.0, currency="USD"),
            transaction_pb2.Transaction(transactionId=unique("t"), userId=user, category="Food",
                                        amount=1.0, currency="USD"),
        ])
        payer = f"user:{user}:USD"
        payee = "category:Food:USD"
        key = unique("pay")
        request = payment_pb2.AuthorizePaymentRequest(
            idempotency_key=key, payer_account_id=payer, payee_account_id=payee,
            amount_cents=1250, currency="USD", description="lunch")
        first = self.payments.AuthorizePayment(request)
        self.assertEqual(first.status, payment_pb2.PAYMENT_STATUS_AUTHORIZED)
        self.assertEqual(len(first.payment_id), 26)
        again = self.payments.AuthorizePayment(request)
        self.assertEqual(again.status, payment_pb2.PAYMENT_STATUS_DUPLICATE)
        self.assertEqual((again.payment_id, again.processed_at), (first.payment_id, first.processed_at))

        too_much = payment_pb2.AuthorizePaymentRequest(
            idempotency_key=unique("pay"), payer_account_id=payer, payee_account_id=payee,
            amount_cents=1_000_000, currency="USD")
        declined = self.payments.AuthorizePayment(too_much)
        self.assertEqual(declined.status, payment_pb2.PAYMENT_STATUS_DECLINED)
        self.assertEqual(declined.error.code, payment_pb2.PAYMENT_ERROR_CODE_INSUFFICIENT_FUNDS)

        with self.assertRaises(grpc.RpcError) as reused:
            self.payments.AuthorizePayment(payment_pb2.AuthorizePaymentRequest(
                idempotency_key=key, payer_account_id=payer, payee_account_id=payee,
                amount_cents=1251, currency="USD"))
        self.assertEqual(reused.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("IDEMPOTENCY_KEY_REUSED", reused.exception.details())

        with self.assertRaises(grpc.RpcError) as invalid:
            self.payments.AuthorizePayment(payment_pb2.AuthorizePaymentRequest(
                idempotency_key=unique("pay"), payer_account_id=payer, amount_cents=1, currency="USD"))
        self.assertEqual(invalid.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

        payment = self.payments.GetPayment(payment_pb2.GetPaymentRequest(payment_id=first.payment_id)).payment
        self.assertEqual((payment.payer_account_id, payment.amount_cents, payment.description),
                         (payer, 1250, "lunch"))
        with self.assertRaises(grpc.RpcError) as missing:
            self.payments.GetPayment(payment_pb2.GetPaymentRequest(payment_id="01ARZ3NDEKTSV4RRFFQ69G5FAV"))
        self.assertEqual(missing.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_and_reflection_name_every_service(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        for service in ["", "kopek.v1.Ledger", "transaction.TransactionService", "payment.v1.PaymentService"]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            self.assertEqual(answer.status, health_pb2.HealthCheckResponse.SERVING, service)
        reflection = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for response in responses for service in response.list_services_response.service}
        for expected in ["transaction.TransactionService", "payment.v1.PaymentService", "kopek.v1.Ledger",
                         "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                         "grpc.reflection.v1.ServerReflection"]:
            self.assertIn(expected, names)


if __name__ == "__main__":
    unittest.main(verbosity=2)
